"""crsrisk: predict severe cytokine release syndrome before CAR-T or bispecific therapy."""

__version__ = "0.1.0"
