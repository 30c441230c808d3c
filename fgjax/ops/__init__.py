"""The methods' math: pure, config-free JAX functions (losses, perturbation, Grad-CAM, queues).

Nothing here reads a config, touches a device mesh or a file: each function
takes arrays and static numbers and returns arrays, so it is tested against a
NumPy reference in ``tests/test_<module>.py``.
"""
