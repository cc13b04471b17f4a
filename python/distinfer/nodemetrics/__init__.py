"""Node metrics: a light sampler run on every node during a benchmark (CPU, memory, network, GPUs).

`sampler` writes one JSON line per interval; `gpus` reads NVIDIA GPUs through NVML and AMD GPUs
through amdsmi, and says once, in the file, when neither is there.
"""
