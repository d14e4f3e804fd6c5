"""cnnsearch: search and tune CNN architectures for image classification."""

from .build import build
from .errors import CnnSearchError, DataError, RecipeError, ShapeError, SpaceError, SpecError
from .export import to_source
from .shapes import ShapeTable, check
from .space import load_space
from .spec import ArchSpec, BlockSpec, HeadSpec

__version__ = "0.1.0"

__all__ = [
    "ArchSpec",
    "BlockSpec",
    "CnnSearchError",
    "DataError",
    "HeadSpec",
    "RecipeError",
    "ShapeError",
    "ShapeTable",
    "SpaceError",
    "SpecError",
    "build",
    "check",
    "load_space",
    "to_source",
]
