"""From a data configuration to interactions: a file through its reader, or the synthetic
default when no path is given."""

from __future__ import annotations

from sigma_pyro.config import DataConfig
from sigma_pyro.data.interactions import Interactions
from sigma_pyro.data.readers import load_interactions
from sigma_pyro.data.synthetic import SyntheticConfig, SyntheticData, generate_synthetic


def synthetic_for(config: DataConfig) -> SyntheticData:
    defaults = SyntheticConfig()
    # Small catalogs or few categories shrink the generator's other limits to fit them.
    return generate_synthetic(
        SyntheticConfig(
            num_users=config.synthetic_users,
            num_items=config.synthetic_items,
            num_categories=config.synthetic_categories,
            seed=config.synthetic_seed,
            max_interests=min(defaults.max_interests, config.synthetic_categories),
            max_length=max(
                defaults.min_length, min(defaults.max_length, config.synthetic_items // 2)
            ),
        )
    )


def read_configured_data(config: DataConfig) -> tuple[Interactions, SyntheticData | None]:
    """The interactions the configuration names, and the generator's ground truth when the
    data is synthetic (else None)."""
    if config.path is None:
        synthetic = synthetic_for(config)
        return synthetic.interactions, synthetic
    options = {}
    if config.format in (None, "table"):
        options = {
            "user_col": config.user_column,
            "item_col": config.item_column,
            "time_col": config.time_column,
            "rating_col": config.rating_column,
        }
    if config.min_rating is not None:
        options["min_rating"] = config.min_rating
    if config.kcore:
        options["kcore"] = config.kcore
    return load_interactions(config.path, config.format, **options), None
