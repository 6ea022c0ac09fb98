"""Seismic binary and BigANN `.csr` vector files: they live in `lsr.formats.vectors`."""

from lsr.formats.vectors import FormatError, read_csr, read_seismic_bin, write_csr, write_seismic_bin

__all__ = ["FormatError", "read_csr", "read_seismic_bin", "write_csr", "write_seismic_bin"]
