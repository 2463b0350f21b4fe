"""The runner's merges against mergekit 0.1.5 on small fixed inputs (tests/merge/pins_inputs.py).

mergekit is too heavy for the test extra, so its outputs were computed once with
`PYTHONPATH=<mergekit>:. python scripts/compare_mergekit.py --pins` and are pinned here (12 decimals);
the script compares the two live, on an MLP and tiny GPT-2 and Llama models, when mergekit is importable.
"""

from __future__ import annotations

import pytest
import torch

from pins_inputs import inputs
from overparam.recipes.merge.per_tensor import combine_of, merge_tensors
from overparam.recipes.merge.task_vectors import TaskVectorMerge, merge

# mergekit's merged tensors (row-major), computed once with mergekit 0.1.5 in float64.
MERGEKIT = {
    "model_stock": {
        "w": [0.171475802938, 0.962103442619, -0.419399265986, -0.854028869951, 0.639473101712, 0.68924369314, -0.81708361189, -0.478690243598, 0.940436816611, 0.236350031492, -1.001341617179, 0.021684677073],
        "b": [0.653315078194, 0.778518922716, -0.853930831988, -0.558470350295]},
    "model_stock_filter_wise": {
        "w": [0.17388953959, 0.961687329349, -0.421705774831, -0.85301839475, 0.643731175599, 0.68604358754, -0.820517053801, -0.474605377824, 0.936442339448, 0.244232853292, -0.999378456394, 0.013295970355],
        "b": [0.653315078194, 0.778518922716, -0.853930831988, -0.558470350295]},
    "sce_topk_0.5": {
        "w": [0.0, 0.828570652796, -0.255541102027, -0.715987926226, 0.859903549466, 0.798487112623, -1.051069808318, -0.618137112237, 1.172441232448, 0.396740573131, -1.215958320554, -0.148999025814],
        "b": [0.479425538604, 0.610341606264, -0.687766159184, -0.403471220034]},
    "karcher": {
        "w": [0.247301858214, 0.954557265352, -0.493280754475, -0.82744424664, 0.706504025507, 0.645385938871, -0.872812875346, -0.420471671794, 0.981163795182, 0.167636565772, -1.024361892266, 0.096330214197],
        "b": [0.742448815191, 0.760902545783, -0.93852502263, -0.519054981934]},
    "slerp_0.3": {
        "w": [0.324588734394, 1.101144614498, -0.608341576397, -0.944381688959, 0.8517160982, 0.724923136019, -1.038520807927, -0.457307759393, 1.156130184751, 0.159296054278, -1.197179023864, 0.149203797544],
        "b": [0.8036698737, 0.916857848995, -1.039934045489, -0.648878296612]},
    "nuslerp_0.75_base": {
        "w": [0.351271861551, 0.972316899576, -0.601827219993, -0.817232651949, 0.812419075517, 0.607881202067, -0.969063367661, -0.358164242973, 1.061358349183, 0.08466388344, -1.083175299677, 0.194458464001],
        "b": [0.833516677982, 0.789396677479, -1.036935509399, -0.522189814828]},
    "ties_sum": {
        "w": [0.324922599516, 0.757984756191, -0.605920612469, -0.679812485528, 0.846683306447, 0.556498208411, -1.093318012943, -0.367485113385, 1.225989835961, 0.154559322887, -1.277251502112, 0.193079009637],
        "b": [0.80434813812, 0.574816349559, -1.038145669626, -0.385264441072]},
    "breadcrumbs": {
        "w": [0.318139955314, 0.804720767044, -0.78111036769, -0.925814682328, 0.629035713545, 0.676856122725, -0.803454083231, -0.29228951373, 1.117897872682, -0.115907194453, -1.130590910898, 0.242083627691],
        "b": [0.966809437878, 0.621552360411, -1.213335424847, -0.434464880432]},
    "ties_count": {
        "w": [0.324922599516, 0.757984756191, -0.605920612469, -0.679812485528, 0.846683306447, 0.556498208411, -1.093318012943, -0.367485113385, 1.225989835961, 0.154559322887, -0.778071752862, 0.193079009637],
        "b": [0.80434813812, 0.574816349559, -1.038145669626, -0.385264441072]},
    "dare_ties": {
        "w": [0.0, 1.428428097043, -1.145775208806, -0.600062829339, 0.724938969048, 0.265699723222, -0.877078670662, 0.161377844237, 1.794668888855, 0.396740573131, -1.709631704278, 0.328799418218],
        "b": [0.667634938185, 1.096429455406, -1.490581569679, -0.108986309897]},
    "della": {
        "w": [0.323156603005, 0.692849440846, -0.69602083756, -0.608105350999, 0.888292695316, 0.489046917063, -1.093564469021, -0.434605142451, 1.226219644952, 0.094066523214, -1.277449362464, 0.249078621077],
        "b": [1.037102571759, 0.609055498712, -1.07566815079, -0.365249200891]},
}
# mergekit draws random drops from the global RNG: these were computed handing it our seeded draws (seed 3,
# scripts/compare_mergekit.py `Draws`); it computes them in float32 on CPU, hence the looser tolerance.
RANDOM = {"dare_ties", "della"}


def _ours(name):
    base, tuned = inputs()
    keys = list(base)
    weights = (1.0, 0.5, 0.8)
    if name == "ties_sum":  # mergekit ties: density 0.5, weights, normalize
        return merge(base, lambda: iter(tuned), TaskVectorMerge(sparsify="magnitude", density=0.5, consensus="sum",
                                                               kept="floor", weights=weights))
    if name == "ties_count":
        return merge(base, lambda: iter(tuned), TaskVectorMerge(sparsify="magnitude", density=0.5, consensus="count",
                                                               kept="floor", weights=weights))
    if name == "dare_ties":
        return merge(base, lambda: iter(tuned), TaskVectorMerge(sparsify="random", density=0.6, rescale="l1",
                                                               consensus="sum", normalize=False, weights=weights, seed=3))
    if name == "della":
        return merge(base, lambda: iter(tuned), TaskVectorMerge(sparsify="della", density=0.6, epsilon=0.15,
                                                               rescale="l1", consensus="sum", weights=weights, seed=3))
    if name == "breadcrumbs":  # mergekit breadcrumbs: density 0.5, gamma 0.2, weights
        return merge(base, lambda: iter(tuned), TaskVectorMerge(sparsify="breadcrumbs", density=0.5, gamma=0.2,
                                                               smallest=0.3, kept="floor", weights=weights))
    method, p, with_base, models = {
        "model_stock": ("model_stock", {"filter_wise": False}, True, tuned),
        "model_stock_filter_wise": ("model_stock", {"filter_wise": True}, True, tuned),
        "sce_topk_0.5": ("sce", {"select_topk": 0.5}, True, tuned),
        "karcher": ("karcher", {"max_iter": 10, "tol": 1e-5}, False, tuned),
        "slerp_0.3": ("slerp", {"t": 0.3, "dot_threshold": 0.9995}, False, tuned[:2]),
        "nuslerp_0.75_base": ("nuslerp", {"weights": [1.0, 3.0], "row_wise": False, "flatten": True}, True, tuned[:2]),
    }[name]
    return merge_tensors(base if with_base else None, models, combine_of(method, p, keys))


@pytest.mark.parametrize("name", sorted(MERGEKIT))
def test_merge_equals_mergekit_pinned(name):
    ours = _ours(name)
    for key, values in MERGEKIT[name].items():
        assert ours[key].dtype == torch.float64
        tolerance = 1e-6 if name in RANDOM else 1e-11
        assert torch.allclose(ours[key].flatten(), torch.tensor(values, dtype=torch.float64), rtol=0, atol=tolerance), key
