from tollgate.types.key import Key, KeyLimit, KeyList

__all__ = ["Key", "KeyLimit", "KeyList"]
