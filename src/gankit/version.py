"""gankit's version: its own module, so that code which only writes it into a file
(checkpoints, exports) does not import the whole public API with `import gankit`."""

__version__ = "0.1.0"
