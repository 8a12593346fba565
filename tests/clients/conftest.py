from tests.clients.sdk_shim import _sdk_on_modern_python

__all__ = ["_sdk_on_modern_python"]
