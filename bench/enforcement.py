"""Edge-enforcement overhead; run through bench/enforcement.sh (which starts PostgreSQL)."""

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from conftest import free_port  # noqa: E402
from stack import Redis, Stack, grpc_modules, wait_until  # noqa: E402

MASTER = "sk-bench"
CONFIG = """
model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench
      api_base: http://127.0.0.1:{port}/v1
      api_key: sk-upstream
    model_info:
      input_cost_per_token: 0.000001
      output_cost_per_token: 0.000002
general_settings:
  master_key: {master}
"""
BODY = ('{"model":"bench","messages":[{"role":"system","content":"You are a helpful assistant."},'
        '{"role":"user","content":"Say hello in one short sentence, please."}],"max_tokens":32,"temperature":0}')


def wrk(url: str, key: str, conc: int, seconds: int, work: Path):
    script = work / "chat.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\nwrk.body = \'{BODY}\'\n'
    )
    out = subprocess.run(
        ["wrk", f"-t{1 if conc < 2 else 2}", f"-c{conc}", f"-d{seconds}s", "--latency", "-s", str(script),
         f"{url}/v1/chat/completions"],
        capture_output=True, text=True, check=True,
    ).stdout
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    pct = {m.group(1): float(m.group(2)) * unit[m.group(3)]
           for m in re.finditer(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)", out, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return pct["50"], pct["99"], rps, int(bad.group(1)) if bad else 0


def redis_calls(redis: Redis) -> int:
    out = subprocess.run(["redis-cli", "-p", str(redis.port), "info", "commandstats"],
                         capture_output=True, text=True).stdout
    return sum(int(m.group(1)) for m in re.finditer(r"cmdstat_(?:evalsha|eval):calls=(\d+)", out))


def main(seconds: int):
    work = Path(tempfile.mkdtemp(prefix="riq-enf-"))
    nginx_port = free_port()
    conf = (ROOT / "bench" / "nginx.conf.in").read_text().replace("__WORK__", str(work)).replace(
        "__PORT__", str(nginx_port))
    (work / "nginx.conf").write_text(conf)
    subprocess.run(["nginx", "-c", str(work / "nginx.conf")], check=True)
    (work / "grpc").mkdir()
    pb, pb_grpc = grpc_modules(work / "grpc")
    env = Stack(work, (pb, pb_grpc), start=False)
    env.cp.config.write_text(CONFIG.format(port=nginx_port, master=MASTER))
    redis = Redis(work)
    try:
        env.cp.start()
        redis.start()
        key = env.grpc().GenerateKey(pb.GenerateKeyRequest(fields=pb.KeyFields(
            models=["bench"], set_models=True, max_budget=1e9, rpm_limit=10**9, tpm_limit=10**12,
            max_parallel_requests=10**6))).key
        # The same limits on a team, and a key of that team with its own: two holders.
        env.grpc().CreateTeam(pb.CreateTeamRequest(team_id="bench-team", fields=pb.TeamFields(
            limits=pb.Limits(max_budget=1e9, rpm_limit=10**9, tpm_limit=10**12,
                             max_parallel_requests=10**6))))
        team_key = env.grpc().GenerateKey(pb.GenerateKeyRequest(fields=pb.KeyFields(
            models=["bench"], set_models=True, max_budget=1e9, rpm_limit=10**9, tpm_limit=10**12,
            max_parallel_requests=10**6, team_id="bench-team"))).key
        print(f"machine: {subprocess.getoutput('nproc')} cores; {seconds}s per run; nginx upstream; "
              "key: model list, max_budget, rpm_limit, tpm_limit, max_parallel_requests; "
              "team key: the same, and its team's")
        print(f"{'mode':<7} {'conc':>4} {'key':<8} {'p50_ms':>8} {'p99_ms':>8} {'req_s':>9} {'non2xx':>7}")
        for mode in ["local", "redis"]:
            extra = ["--redis-url", redis.url] if mode == "redis" else []
            from stack import DataPlane
            dp = DataPlane(work, env.nats.url, f"dp-{mode}", extra, threads=2)
            dp.start()
            for k in (key, team_key):
                wait_until(lambda: subprocess.run(
                    ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Authorization: Bearer {k}",
                     "-H", "content-type: application/json", "-d", BODY, f"{dp.url}/v1/chat/completions"],
                    capture_output=True, text=True).stdout == "200", what="key accepted")
            wrk(dp.url, MASTER, 4, 2, work)  # warm up
            calls0 = redis_calls(redis)
            total = 0
            for conc in (1, 16):
                rows = {}
                for name, k in (("master", MASTER), ("limited", key), ("team", team_key)):
                    rows[name] = wrk(dp.url, k, conc, seconds, work)
                    total += rows[name][2] * seconds if name != "master" else 0
                    p50, p99, rps, bad = rows[name]
                    print(f"{mode:<7} {conc:>4} {name:<8} {p50:8.3f} {p99:8.3f} {rps:9.0f} {bad:7d}")
                m = rows["master"]
                for name in ("limited", "team"):
                    l = rows[name]
                    print(f"{mode:<7} {conc:>4} {'+' + name:<8} {l[0]-m[0]:8.3f} {l[1]-m[1]:8.3f} {100*l[2]/m[2]:8.1f}%")
            if mode == "redis":
                print(f"redis: {redis_calls(redis) - calls0} lease calls for about {total:.0f} limited requests")
            dp.stop()
    finally:
        subprocess.run(["nginx", "-c", str(work / "nginx.conf"), "-s", "stop"], check=False)
        redis.stop()
        env.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
