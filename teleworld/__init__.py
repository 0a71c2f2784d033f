"""teleworld: teleoperate MuJoCo robots, record Zarr episodes, train world models, replay them."""

__version__ = "0.1.0"
