"""cnnsearch: search and tune CNN architectures for image classification."""

from .build import build
from .errors import CnnSearchError, DataError, RecipeError, ShapeError, SpaceError, SpecError
from .export import to_source
from .results import open_study, trials_frame
from .shapes import ShapeTable, check
from .space import load_space
from .spec import ArchSpec, BlockSpec, HeadSpec
from .version import __version__ as __version__

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
    "open_study",
    "to_source",
    "trials_frame",
]
