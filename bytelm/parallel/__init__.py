"""Where the computation runs: devices, meshes, layouts and processes.

mesh       the (data, fsdp) device mesh of `runtime.mesh`; state and batch layouts; host copies
processes  several processes as one job: cluster environments, a barrier, an any-of vote
runtime    `config.runtime` resolved against the environment; the model kernels a backend runs
"""
