"""OSS (service ordering) port and its TMF641 HTTP adapter."""

from adapters.oss.port import (
    Barring,
    OssClient,
    OssNotFound,
    OssRejected,
    OssUnavailable,
    ServiceOrderRef,
)

__all__ = ["Barring", "OssClient", "OssNotFound", "OssRejected", "OssUnavailable", "ServiceOrderRef"]
