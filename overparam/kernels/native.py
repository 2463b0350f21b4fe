"""CPU kernels for the `sparse` backend, compiled on first use with the system C compiler.

PyTorch's CSR matmul on CPU (MKL) runs at a small fraction of its dense GEMM speed on these
shapes, too slow to make 90% sparsity pay. These loops keep a 64-wide batch slice of the
output in vector registers and stream the weight's nonzeros, so their cost is proportional to the
number of nonzeros. The shared library is built once per source/compiler/CPU into a cache folder
(`OVERPARAM_KERNEL_CACHE`, default `~/.cache/overparam/kernels`); where no compiler works the
`sparse` backend uses `torch.sparse` instead (same results, slower).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

# float32 only: other dtypes go through torch.sparse. Layout conventions:
#   xt is the input transposed, (features, ldx) with the batch zero-padded to ldx (see `transposed_padded`);
#   products are written transposed, (nrows, ldx), and turned back by `untransposed`.
SOURCE = r"""
#include <stdint.h>
typedef float v16 __attribute__((vector_size(64), aligned(4)));
#define LD(p) (*(const v16 *)(p))

/* out_t[i*ldx + b] = bias[i] + sum_{p in row i} w[i*s_row + cols[p]*s_col] * xt[cols[p]*ldx + b], b < ldx:
   the result transposed, (nrows, ldx), written in whole vectors (`untransposed` turns it back).
   xt rows are zero-padded to ldx, a multiple of 16, so every load is a full vector. The weight is
   read in place at the nonzeros: (s_row, s_col) = (in, 1) for W, (1, in) for W^T. */
#define SPMM_BLOCK(N)                                                                             \
    for (; b0 + 16 * (N) <= ldx; b0 += 16 * (N)) {                                                \
        v16 a[N];                                                                                 \
        for (int k = 0; k < (N); k++) a[k] = (v16){0};                                            \
        for (int64_t p = start; p < end; p++) {                                                   \
            const float v = wr[cols[p] * s_col];                                                  \
            const float *xr = xt + cols[p] * ldx + b0;                                            \
            for (int k = 0; k < (N); k++) a[k] += v * LD(xr + 16 * k);                            \
        }                                                                                         \
        for (int k = 0; k < (N); k++) *(v16 *)(o + b0 + 16 * k) = a[k] + bv;                      \
    }

void overparam_spmm_t_f32(int64_t nrows, int64_t ldx, const int64_t *crow, const int64_t *cols, const float *w,
                          int64_t s_row, int64_t s_col, const float *xt, const float *bias, float *out_t) {
    #pragma omp parallel for schedule(static) if (crow[nrows] * ldx > 32768)
    for (int64_t i = 0; i < nrows; i++) {
        const int64_t start = crow[i], end = crow[i + 1];
        const float bv = bias ? bias[i] : 0.0f;
        const float *wr = w + i * s_row;
        float *o = out_t + i * ldx;
        int64_t b0 = 0;
        /* 128 batch rows at once where the batch allows: each nonzero's index and value are read once
           for a whole 512-byte row of xt, 8 of the 32 vector registers accumulating. */
        SPMM_BLOCK(8)
        SPMM_BLOCK(4)
        SPMM_BLOCK(1)
    }
}

/* dst[c*ldd + r] = src[r*lds + c] for r < R, c < C, and dst[c*ldd + r] = 0 for R <= r < ldd: the transposed,
   zero-padded operands of the kernels here (and their outputs back), in 16x16 tiles that stay in L1
   (a strided copy through torch walks whole columns and runs about twice as slow on these shapes). */
void overparam_transpose_pad_f32(int64_t R, int64_t C, const float *src, int64_t lds, float *dst, int64_t ldd) {
    for (int64_t c0 = 0; c0 < C; c0 += 16) {
        const int64_t ce = c0 + 16 < C ? c0 + 16 : C;
        for (int64_t r0 = 0; r0 < ldd; r0 += 16) {
            const int64_t re = r0 + 16 < ldd ? r0 + 16 : ldd;
            if (re <= R) {
                for (int64_t c = c0; c < ce; c++)
                    for (int64_t r = r0; r < re; r++) dst[c * ldd + r] = src[r * lds + c];
            } else {
                for (int64_t c = c0; c < ce; c++)
                    for (int64_t r = r0; r < re; r++) dst[c * ldd + r] = r < R ? src[r * lds + c] : 0.0f;
            }
        }
    }
}

typedef float v8 __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));
static inline float hsum(v16 a) {  /* halving tree: 4 vector adds instead of 15 scalar ones */
    v8 h = __builtin_shufflevector(a, a, 0, 1, 2, 3, 4, 5, 6, 7) + __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15);
    v4 q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
    return (q[0] + q[2]) + (q[1] + q[3]);
}

/* dense_out[i*ncols + cols[p]] = sum_b gt[i*ldx + b] * xt[cols[p]*ldx + b] at the nonzeros only, zero
   elsewhere (each row is cleared here, while the thread that fills it has it in cache; the caller
   passes uninitialised memory); both operands are zero-padded to ldx (a multiple of 16). */
void overparam_sddmm_f32(int64_t nrows, int64_t ldx, const int64_t *crow, const int64_t *cols,
                         const float *gt, const float *xt, float *dense_out, int64_t ncols) {
    #pragma omp parallel for schedule(static) if (crow[nrows] * ldx > 32768)
    for (int64_t i = 0; i < nrows; i++) {
        const float *gr = gt + i * ldx;
        float *o = dense_out + i * ncols;
        for (int64_t c = 0; c < ncols; c++) o[c] = 0.0f;
        const int64_t end = crow[i + 1];
        int64_t p = crow[i];
        for (; p + 4 <= end; p += 4) {
            const float *x0 = xt + cols[p] * ldx, *x1 = xt + cols[p + 1] * ldx;
            const float *x2 = xt + cols[p + 2] * ldx, *x3 = xt + cols[p + 3] * ldx;
            v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            for (int64_t b = 0; b < ldx; b += 16) {
                const v16 g = LD(gr + b);
                a0 += g * LD(x0 + b); a1 += g * LD(x1 + b); a2 += g * LD(x2 + b); a3 += g * LD(x3 + b);
            }
            o[cols[p]] = hsum(a0); o[cols[p + 1]] = hsum(a1); o[cols[p + 2]] = hsum(a2); o[cols[p + 3]] = hsum(a3);
        }
        for (; p < end; p++) {
            const float *x0 = xt + cols[p] * ldx;
            v16 a0 = {0};
            for (int64_t b = 0; b < ldx; b += 16) a0 += LD(gr + b) * LD(x0 + b);
            o[cols[p]] = hsum(a0);
        }
    }
}

/* Direct sparse convolution (no im2col): xp is the zero-padded input (B, C, Hp, Wp), out (B, O, Ho, Wo).
   A nonzero p of output channel i sits at input channel c and tap (kh, kw); off[p] = (c*Hp + kh*dh)*Wp + kw*dw
   is where its receptive field starts in one image, so output row h reads xp[b][off[p] + h*sh*Wp + w*sw].
   The forward keeps a 16- (or 8-) wide piece of an output row in a register across all of the row's
   nonzeros; the two gradients stream the same taps. */
typedef float v8u __attribute__((vector_size(32), aligned(4)));

void overparam_conv_fwd_f32(int64_t B, int64_t C, int64_t Hp, int64_t Wp, const float *xp, int64_t O, int64_t Ho,
                            int64_t Wo, int64_t sh, int64_t sw, const int64_t *crow, const int64_t *cols,
                            const int64_t *off, const float *w, int64_t K, const float *bias, float *out) {
    #pragma omp parallel for collapse(2) schedule(static) if (crow[O] * B * Ho * Wo > 65536)
    for (int64_t b = 0; b < B; b++) {
        for (int64_t i = 0; i < O; i++) {
            const float *xb = xp + b * C * Hp * Wp;
            float *o = out + (b * O + i) * Ho * Wo;
            const int64_t start = crow[i], n = crow[i + 1] - crow[i];
            const float bv = bias ? bias[i] : 0.0f;
            const int64_t *offs = off + start;
            float vals[n > 0 ? n : 1];
            for (int64_t p = 0; p < n; p++) vals[p] = w[i * K + cols[start + p]];
            for (int64_t h = 0; h < Ho; h++) {
                const float *xr = xb + h * sh * Wp;
                float *orow = o + h * Wo;
                int64_t w0 = 0;
                if (sw == 1) {
                    for (; w0 + 16 <= Wo; w0 += 16) {
                        v16 a = {0};
                        for (int64_t p = 0; p < n; p++) a += vals[p] * LD(xr + offs[p] + w0);
                        for (int t = 0; t < 16; t++) orow[w0 + t] = a[t] + bv;
                    }
                    for (; w0 + 8 <= Wo; w0 += 8) {
                        v8u a = {0};
                        for (int64_t p = 0; p < n; p++) a += vals[p] * *(const v8u *)(xr + offs[p] + w0);
                        for (int t = 0; t < 8; t++) orow[w0 + t] = a[t] + bv;
                    }
                }
                for (; w0 < Wo; w0++) {
                    float a = 0.0f;
                    for (int64_t p = 0; p < n; p++) a += vals[p] * xr[offs[p] + w0 * sw];
                    orow[w0] = a + bv;
                }
            }
        }
    }
}

/* gxp (B, C, Hp, Wp), zeroed by the caller: the gradient of the padded input. */
void overparam_conv_grad_input_f32(int64_t B, int64_t C, int64_t Hp, int64_t Wp, float *gxp, int64_t O, int64_t Ho,
                                   int64_t Wo, int64_t sh, int64_t sw, const int64_t *crow, const int64_t *cols,
                                   const int64_t *off, const float *w, int64_t K, const float *g) {
    #pragma omp parallel for schedule(static) if (crow[O] * B * Ho * Wo > 65536)
    for (int64_t b = 0; b < B; b++) {
        float *gb = gxp + b * C * Hp * Wp;
        for (int64_t i = 0; i < O; i++) {
            const float *gi = g + (b * O + i) * Ho * Wo;
            for (int64_t p = crow[i]; p < crow[i + 1]; p++) {
                const float v = w[i * K + cols[p]];
                float *base = gb + off[p];
                for (int64_t h = 0; h < Ho; h++) {
                    float *restrict dst = base + h * sh * Wp;
                    const float *restrict src = gi + h * Wo;
                    if (sw == 1) {
                        for (int64_t x = 0; x < Wo; x++) dst[x] += v * src[x];
                    } else {
                        for (int64_t x = 0; x < Wo; x++) dst[x * sw] += v * src[x];
                    }
                }
            }
        }
    }
}

/* gw (O, K), zeroed by the caller: gw[i, cols[p]] = sum over b, h, w of g[b,i,h,w] * (shifted xp) at nonzeros only.
   Images one after another (each image's input stays in cache), output channels in parallel. */
void overparam_conv_grad_weight_f32(int64_t B, int64_t C, int64_t Hp, int64_t Wp, const float *xp, int64_t O,
                                    int64_t Ho, int64_t Wo, int64_t sh, int64_t sw, const int64_t *crow,
                                    const int64_t *cols, const int64_t *off, const float *g, float *gw, int64_t K) {
    for (int64_t b = 0; b < B; b++) {
        const float *xb = xp + b * C * Hp * Wp;
        #pragma omp parallel for schedule(static) if (crow[O] * Ho * Wo > 65536)
        for (int64_t i = 0; i < O; i++) {
            const float *gi = g + (b * O + i) * Ho * Wo;
            const int64_t end = crow[i + 1];
            const int64_t vec = sw == 1 ? Wo - Wo % 16 : 0;
            for (int64_t p = crow[i]; p < end; p += 4) {
                /* four taps at a time share every load of the output gradient */
                const int64_t n = end - p < 4 ? end - p : 4;
                const float *base[4];
                for (int q = 0; q < 4; q++) base[q] = xb + off[q < n ? p + q : p];
                v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
                float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                for (int64_t h = 0; h < Ho; h++) {
                    const float *gr = gi + h * Wo;
                    const int64_t row = h * sh * Wp;
                    const float *x0 = base[0] + row, *x1 = base[1] + row, *x2 = base[2] + row, *x3 = base[3] + row;
                    for (int64_t x = 0; x < vec; x += 16) {
                        const v16 gv = LD(gr + x);
                        a0 += gv * LD(x0 + x); a1 += gv * LD(x1 + x); a2 += gv * LD(x2 + x); a3 += gv * LD(x3 + x);
                    }
                    for (int64_t x = vec; x < Wo; x++) {
                        const float gv = gr[x];
                        s[0] += gv * x0[x * sw]; s[1] += gv * x1[x * sw]; s[2] += gv * x2[x * sw]; s[3] += gv * x3[x * sw];
                    }
                }
                const float sums[4] = {hsum(a0) + s[0], hsum(a1) + s[1], hsum(a2) + s[2], hsum(a3) + s[3]};
                for (int q = 0; q < n; q++) gw[i * K + cols[p + q]] += sums[q];
            }
        }
    }
}
"""

_FLAG_SETS = (
    ["-O3", "-march=native", "-fopenmp"],
    ["-O3", "-fopenmp"],
    ["-O3"],
)

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_load_error: str | None = None


def _cache_dir() -> Path:
    root = os.environ.get("OVERPARAM_KERNEL_CACHE") or os.path.join(Path.home(), ".cache", "overparam", "kernels")
    return Path(root)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                return line
    except OSError:
        pass
    return platform.processor()


def _compile(compiler: str, flags: list[str]) -> Path:
    """Build the library (or find it built) for these flags; raise on failure."""
    key = hashlib.sha256("\n".join([SOURCE, compiler, " ".join(flags), platform.machine(), _cpu_model()])
                         .encode()).hexdigest()[:16]
    target = _cache_dir() / f"csr_cpu_{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        source = Path(tmp) / "csr_cpu.c"
        source.write_text(SOURCE)
        built = Path(tmp) / "csr_cpu.so"
        subprocess.run([compiler, *flags, "-shared", "-fPIC", str(source), "-o", str(built)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
        # Rename into place: a concurrent builder of the same key produces the same file.
        os.replace(built, target)
    return target


def library() -> ctypes.CDLL | None:
    """The compiled kernels, or None where they cannot be built (`load_error()` says why)."""
    global _library, _load_error
    if _library is not None or _load_error is not None:
        return _library
    with _lock:
        if _library is not None or _load_error is not None:
            return _library
        if os.environ.get("OVERPARAM_NATIVE_KERNELS", "1") == "0":
            _load_error = "disabled by OVERPARAM_NATIVE_KERNELS=0"
            return None
        compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            _load_error = "no C compiler found"
            return None
        errors = []
        for flags in _FLAG_SETS:
            try:
                lib = ctypes.CDLL(str(_compile(compiler, flags)))
            except (OSError, subprocess.SubprocessError) as exc:
                errors.append(f"{' '.join(flags)}: {exc}")
                continue
            pointer, index = ctypes.c_void_p, ctypes.c_int64
            lib.overparam_spmm_t_f32.argtypes = [index, index, pointer, pointer, pointer, index, index, pointer,
                                                 pointer, pointer]
            lib.overparam_spmm_t_f32.restype = None
            lib.overparam_sddmm_f32.argtypes = [index, index, pointer, pointer, pointer, pointer, pointer, index]
            lib.overparam_sddmm_f32.restype = None
            lib.overparam_transpose_pad_f32.argtypes = [index, index, pointer, index, pointer, index]
            lib.overparam_transpose_pad_f32.restype = None
            conv_args = [index] * 4 + [pointer] + [index] * 5 + [pointer] * 4 + [index]
            lib.overparam_conv_fwd_f32.argtypes = conv_args + [pointer, pointer]
            lib.overparam_conv_fwd_f32.restype = None
            lib.overparam_conv_grad_input_f32.argtypes = conv_args + [pointer]
            lib.overparam_conv_grad_input_f32.restype = None
            lib.overparam_conv_grad_weight_f32.argtypes = conv_args[:-2] + [pointer, pointer, index]
            lib.overparam_conv_grad_weight_f32.restype = None
            _library = lib
            return lib
        _load_error = "; ".join(errors)
        return None


def transposed_padded(x2d: torch.Tensor) -> torch.Tensor:
    """x2d (B, F) as a contiguous (F, ldx) float32 tensor, batch zero-padded to a multiple of 16."""
    batch, features = x2d.shape
    ldx = -(-batch // 16) * 16
    lib = library()
    if lib is None or x2d.dtype != torch.float32 or x2d.device.type != "cpu":
        out = torch.zeros(features, ldx, dtype=x2d.dtype, device=x2d.device)
        out[:, :batch] = x2d.t()
        return out
    source = x2d.contiguous()
    out = torch.empty(features, ldx, dtype=torch.float32)
    lib.overparam_transpose_pad_f32(batch, features, source.data_ptr(), features, out.data_ptr(), ldx)
    return out


def untransposed(out_t: torch.Tensor, batch: int) -> torch.Tensor:
    """The (batch, rows) matrix of a kernel's (rows, ldx) transposed output (padding columns dropped)."""
    rows, ldx = out_t.shape
    out = torch.empty(batch, rows, dtype=torch.float32)
    library().overparam_transpose_pad_f32(rows, batch, out_t.data_ptr(), ldx, out.data_ptr(), rows)
    return out


def load_error() -> str | None:
    """Why the native kernels are unavailable (None when they loaded or were never tried)."""
    return _load_error
