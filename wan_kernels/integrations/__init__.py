"""Adapters that run other libraries' DiT models on the ``wan_kernels`` ops.

Each adapter is one module named after the library it adapts, which it alone imports, so those
libraries stay optional: ``wan_kernels.integrations.diffusers.apply(transformer)``.
"""
