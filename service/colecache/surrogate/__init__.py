"""Surrogates on COLE vectors: feature maps, regression heads with uncertainty, and their configuration."""

from .config import FeatureConfig, HeadConfig, SurrogateConfig
from .model import Surrogate

__all__ = ["FeatureConfig", "HeadConfig", "Surrogate", "SurrogateConfig"]
