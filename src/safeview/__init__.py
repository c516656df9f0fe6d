"""SafeView: decide whether an image is unsafe, say why, and obfuscate only the unsafe regions.

Heavy modules (torch) are imported lazily by the submodules that need them, so that
``import safeview`` and ``safeview --version`` stay fast.
"""

__version__ = "0.1.0"
