#!/usr/bin/env bash
# Fuzzes the proxy's frame parser, compare engine and sequence rewriter with AFL++ and SharpFuzz (docs/FUZZING.md).
# Not part of ./run-tests. Works on a fresh Debian 12 machine as root (installs afl++ with apt-get, restores the
# sharpfuzz tool from fuzz/dotnet-tools.json).
#
#   scripts/fuzz.sh                   # until >= 1 000 000 executions (the default)
#   scripts/fuzz.sh -e 5000000        # until >= 5 000 000 executions
#   scripts/fuzz.sh -t 600            # for 600 seconds instead
#   scripts/fuzz.sh -r                # resume the previous run's queue (same work dir) instead of starting from the seeds
#   scripts/fuzz.sh --replay FILE...  # run inputs in-process (no AFL) and print stack traces
#
# Environment: FUZZ_WORK (default /tmp/colo-fuzz: build output and AFL findings), FUZZ_NICE (default 10).
# Prints executions, paths, coverage and crashes at the end; crashing inputs are copied to fuzz/crashes/ and replayed
# with their stack traces. Exit status: 0 no crash, 1 crash or hang found, 2 set-up error.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${FUZZ_WORK:-/tmp/colo-fuzz}"
NICE="${FUZZ_NICE:-10}"
EXECS=1000000
SECONDS_LIMIT=""
RESUME=0
REPLAY=()

while (($#)); do
  case "$1" in
    -e|--execs) EXECS="$2"; shift 2 ;;
    -t|--seconds) SECONDS_LIMIT="$2"; shift 2 ;;
    -r|--resume) RESUME=1; shift ;;
    --replay) shift; REPLAY=("$@"); (( ${#REPLAY[@]} )) || REPLAY=("$ROOT/fuzz/corpus"); break ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "fuzz.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

say() { echo "fuzz: $*" >&2; }

# ---- tools
if ! command -v dotnet >/dev/null; then
  say "the .NET 10 SDK (dotnet) is required"; exit 2
fi
if ((${#REPLAY[@]} == 0)) && ! command -v afl-fuzz >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    say "afl-fuzz missing: run as root or 'apt-get install afl++'"; exit 2
  fi
  say "installing afl++ ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq afl++ >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq afl++ >/dev/null; }
fi

# ---- build (a published copy, so instrumenting never touches the normal build output)
BIN="$WORK/bin"
rm -rf "$BIN" "$WORK/bin-afl"
mkdir -p "$WORK"
say "building the harness ..."
dotnet publish "$ROOT/fuzz/Colo.Proxy.Fuzz/Colo.Proxy.Fuzz.csproj" -c Release -o "$BIN" -nologo -v q >&2

if ((${#REPLAY[@]})); then
  exec dotnet "$BIN/Colo.Proxy.Fuzz.dll" --replay "${REPLAY[@]}"
fi

# ---- the seeds must pass before AFL starts (on the plain build: instrumented code only runs under afl-fuzz)
dotnet "$BIN/Colo.Proxy.Fuzz.dll" --replay "$ROOT/fuzz/corpus" >"$WORK/seeds.log" || {
  cat "$WORK/seeds.log" >&2; say "a seed input fails"; exit 1; }

# ---- instrument Colo.Proxy.dll in a copy (only the code under test: not the harness, SharpFuzz or the framework)
ABIN="$WORK/bin-afl"
rm -rf "$ABIN"
cp -r "$BIN" "$ABIN"
say "instrumenting Colo.Proxy.dll ..."
(cd "$ROOT/fuzz" && dotnet tool restore >/dev/null && dotnet tool run sharpfuzz "$ABIN/Colo.Proxy.dll")

# ---- fuzz
OUT="$WORK/findings"
if ((RESUME)) && [ -d "$OUT/default/queue" ]; then
  IN=-
else
  rm -rf "$OUT"
  IN="$ROOT/fuzz/corpus"
fi
limit=(-E "$EXECS")
[ -n "$SECONDS_LIMIT" ] && limit=(-V "$SECONDS_LIMIT")
export AFL_SKIP_BIN_CHECK=1            # the target is the (uninstrumented) dotnet host; SharpFuzz runs the fork server
export AFL_NO_UI=1
export AFL_SKIP_CPUFREQ=1
export AFL_NO_AFFINITY=1               # shared machine: do not pin a core
export AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
export AFL_FORKSRV_INIT_TMOUT=60000    # dotnet start-up on a loaded machine
export DOTNET_TieredPGO=0
say "afl-fuzz: ${limit[*]} (load: $(cut -d' ' -f1-3 /proc/loadavg)) ..."
start=$(date +%s)
set +e
nice -n "$NICE" afl-fuzz -i "$IN" -o "$OUT" -m none -t 5000 "${limit[@]}" \
  -x "$ROOT/fuzz/Colo.Proxy.Fuzz/frames.dict" -- dotnet "$ABIN/Colo.Proxy.Fuzz.dll" >"$WORK/afl.log" 2>&1
rc=$?
set -e
end=$(date +%s)
STATS="$OUT/default/fuzzer_stats"
if [ ! -f "$STATS" ]; then
  tail -40 "$WORK/afl.log" >&2; say "afl-fuzz did not start (exit $rc)"; exit 2
fi
stat() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$STATS"; }
crashes=$(stat saved_crashes); crashes=${crashes:-$(stat unique_crashes)}
hangs=$(stat saved_hangs); hangs=${hangs:-$(stat unique_hangs)}
execs=$(stat execs_done)
secs=$((end - start))
echo "afl-fuzz $(stat afl_version), exit $rc, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "executions:   $execs in ${secs} s ($((execs / (secs > 0 ? secs : 1))) execs/s overall; last $(stat execs_per_sec)/s)"
echo "corpus:       $(stat corpus_count) paths ($(stat corpus_found) found), edges $(stat edges_found)/$(stat total_edges), bitmap $(stat bitmap_cvg), stability $(stat stability)"
echo "crashes:      $crashes"
echo "hangs:        $hangs"
echo "findings:     $OUT"

found=0
for f in "$OUT"/default/crashes/id:* "$OUT"/default/hangs/id:*; do
  [ -e "$f" ] || continue
  found=1
  mkdir -p "$ROOT/fuzz/crashes"
  name="afl-$(basename "$(dirname "$f")")-$(date -u +%Y%m%d)-$(basename "$f" | cut -d, -f1 | tr : -).bin"
  install -m 644 "$f" "$ROOT/fuzz/crashes/$name"
  echo "saved fuzz/crashes/$name"
done
if ((found)); then
  dotnet "$BIN/Colo.Proxy.Fuzz.dll" --replay "$OUT"/default/crashes "$OUT"/default/hangs || true
  exit 1
fi
((rc == 0)) || { tail -20 "$WORK/afl.log" >&2; exit 2; }
exit 0
