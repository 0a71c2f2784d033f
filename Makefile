# Two entry points for a fresh machine: `make demo` and `make test`. Both set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 libosmesa6 ffmpeg chromium xvfb xdotool g++
export MUJOCO_GL ?= egl
export SDL_VIDEODRIVER ?= dummy
export SDL_AUDIODRIVER ?= dummy

.PHONY: setup system-deps demo test bench clean

setup: system-deps $(VENV)/.installed

# Headless OpenGL (Mesa) for MuJoCo rendering; skipped when already present or when not root.
system-deps:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	  else echo "please install: $(APT_PACKAGES)"; fi; \
	fi

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0   # the CPU wheel first; then the project cannot pull a CUDA build
	$(PY) -m pip install -q -e ".[test,ray]"
	touch $@

demo: setup
	rm -rf demo_out
	$(VENV)/bin/teleworld demo --out demo_out

test: setup
	$(PY) -m pytest

bench: setup
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf demo_out .pytest_cache
