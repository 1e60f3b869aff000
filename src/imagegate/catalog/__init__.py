"""The model catalog: packaged TOML data validated into ``core.types`` at load.

Use :func:`load_catalog` to get a :class:`Catalog`; see :mod:`imagegate.catalog.loader` for the
data layout.
"""

from imagegate.catalog.loader import Catalog, CatalogError, load_catalog

__all__ = ["Catalog", "CatalogError", "load_catalog"]
