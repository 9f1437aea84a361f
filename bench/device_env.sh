# Sourced by the device-session scripts (gpu_session.sh, gpu_suites.sh, gpu_study.sh): the carried wheels (.whl)
# installed into /tmp/site, the import path, and the Fashion-MNIST files where questbench looks for them.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD/.devsite:$PWD PYTHONUNBUFFERED=1
mkdir -p /usr/share/datasets/fashion-mnist
cp .devsite/fmnist/* questbench/data/fashion_mnist/t10k* /usr/share/datasets/fashion-mnist/
