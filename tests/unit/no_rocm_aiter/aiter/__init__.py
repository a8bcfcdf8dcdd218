# Stands in for aiter installed on a machine without ROCm: the real package raises
# RuntimeError (not ImportError) from its import-time device probe.
raise RuntimeError("aiter stand-in: no ROCm device found (HIP runtime not available)")
