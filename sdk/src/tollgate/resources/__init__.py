from tollgate.resources.keys import AsyncKeys, Keys

__all__ = ["AsyncKeys", "Keys"]
