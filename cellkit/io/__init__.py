"""Plate indexes, image reading, and store readers/writers."""

from .bbbc021_crops import BBBC021_CROP_CHANNELS, import_bbbc021_crops
from .cells import IncompleteStoreError, obs_adata, open_cells, read_cells
from .dataset import CellDataset
from .images import ImageReadError, image_exists, image_shape, read_crops, read_field, read_image
from .omezarr_index import from_omezarr
from .plate_index import (
    BBBC021_CHANNELS,
    METADATA_COLUMNS,
    PlateIndexError,
    channels_of,
    join_metadata,
    read_index,
    validate_index,
    write_index,
)
from .plate_sources import from_bbbc021, from_csv, from_folder, from_pattern
from .profiles import ProfileTableError, from_table, join_bbbc021, read_profiles, to_table

__all__ = [
    "BBBC021_CHANNELS", "BBBC021_CROP_CHANNELS", "METADATA_COLUMNS", "CellDataset", "ImageReadError",
    "IncompleteStoreError", "PlateIndexError", "channels_of", "from_bbbc021", "from_csv", "from_folder",
    "from_omezarr", "from_pattern", "join_metadata", "image_exists", "image_shape", "import_bbbc021_crops", "obs_adata", "open_cells",
    "read_cells", "read_crops", "read_field", "read_image",
    "read_index", "validate_index", "write_index",
    "ProfileTableError", "from_table", "join_bbbc021", "read_profiles", "to_table",
]

