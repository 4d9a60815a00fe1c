from genkernels.ops.reparam_kl import reparam_kl  # noqa: F401
