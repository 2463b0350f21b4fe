"""The quantize family: post-training quantization stored as packed integers."""
