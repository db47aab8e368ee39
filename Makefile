# Two commands on a fresh Debian machine:  make run   and   make test
# Both create .venv, install the Python dependencies and the system packages
# they need (apt-get when run as root; otherwise a message says what to install).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DEBS := libopus0 libsndfile1 python3-venv espeak-ng
TEST_DEBS := $(RUN_DEBS) ffmpeg prometheus iproute2 util-linux icecast2 liquidsoap \
	gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav \
	chromium chromium-driver systemd
# The peers and players the benchmarks measure against (benchmarks/README.md).
BENCH_DEBS := $(TEST_DEBS) vlc-bin vlc-plugin-base

.PHONY: run test lint bench fuzz clean system-run system-test system-bench

run: system-run $(STAMP)
	$(BIN)/broadcaster serve

# Two test files at a time (most tests wait on servers, players and browsers, not the CPU), then the
# few that assert no frame was missed or lost, alone (-m solo), so another test's load cannot fail them.
test: system-test $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not solo"
	$(BIN)/python -m pytest -q -m solo

lint: $(STAMP)
	$(BIN)/ruff check broadcaster codecs protocols tests benchmarks
	$(BIN)/mypy broadcaster codecs protocols

# A long randomized run of tests/unit/test_fuzz.py by hand (make test runs it bounded and derandomized).
FUZZ_EXAMPLES ?= 20000
fuzz: system-test $(STAMP)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -p no:cacheprovider --timeout=0 tests/unit/test_fuzz.py

bench: system-bench $(STAMP)
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/python benchmarks/channels.py
	$(BIN)/python benchmarks/latency.py
	$(BIN)/python benchmarks/listeners.py
	$(BIN)/python benchmarks/faststart.py
	$(BIN)/python benchmarks/fanout.py
	$(BIN)/python benchmarks/preemption.py
	$(BIN)/python benchmarks/isolation.py
	$(BIN)/python benchmarks/stalls.py --speakers 1000 5000

system-run:
	@scripts/system-deps.sh $(RUN_DEBS)

system-test:
	@scripts/system-deps.sh $(TEST_DEBS)

system-bench:
	@scripts/system-deps.sh $(BENCH_DEBS)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
