"""Number formatting shared by the CLI's tables and the HTML report."""


def human(n: float) -> str:
    """12498500 -> '12.5M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(int(n)) if float(n).is_integer() else f"{n:.3g}"
