"""etcd's database size as payments go by, printed as JSON lines: not a test, nothing is asserted.

    .venv/bin/python -m tests.measure_etcd_size DEPLOYMENT_DIR [payments] [concurrency]

Against a running deployment: registers (or reuses) the bench accounts, then makes cross-bank
payments (the only ones that write a decision to etcd) closed-loop from C callers until the count
is reached, and every 10,000 payments prints the member's file size, the bytes in use, and how many
decision keys exist. Each decision is deleted 10 s after phase 2; etcd compacts its history every
minute and the launcher defragments when most of the file is free (strife/launcher/etcd_upkeep.py).
"""
import asyncio
import json
import sys
import time
import uuid

from strife.checks.bench.run import CROSS_BANK, Bench
from strife.client.gateway_client import GatewayClient
from strife.deployment import discovery
from strife.deployment.identities import OPERATOR
from strife.deployment.topology import load_deployment

EVERY = 10_000


async def etcd_figures(topology):
    async with discovery.client(topology, OPERATOR) as etcd:
        status = await etcd.maintenance.status(timeout=5)
        keys = await etcd.kv.get("/strife/txn/", range_end="/strife/txn0", count_only=True, timeout=10)
        return {"db_bytes": status.dbSize, "in_use_bytes": status.dbSizeInUse, "txn_keys": keys.count}


async def main(home, total, concurrency):
    topology = load_deployment(home)
    bench = Bench(topology, 0, concurrency, lambda text: None)
    users = await bench._accounts()
    bench.banks = await bench._banks_of(users)
    payers = [u for u in users if bench._payees(u, CROSS_BANK)][:concurrency]
    clients = {u: GatewayClient(topology, u) for u in payers}
    done, began = 0, time.monotonic()
    print(json.dumps({"payments": 0, **await etcd_figures(topology)}), flush=True)

    async def worker(w):
        nonlocal done
        payer = payers[w % len(payers)]
        payees = bench._payees(payer, CROSS_BANK)
        n = 0
        while done < total:
            n += 1
            try:
                await clients[payer].pay(payees[n % len(payees)], 1, str(uuid.uuid4()), timeout=10)
            except Exception:
                continue
            done += 1
            if done % EVERY == 0:
                figures = await etcd_figures(topology)
                print(json.dumps({"payments": done, "seconds": round(time.monotonic() - began), **figures}),
                      flush=True)

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    for client in clients.values():
        await client.close()
    await asyncio.sleep(75)  # past forgetting (10 s) and one compaction (1 min)
    print(json.dumps({"payments": done, "after_s": 75, **await etcd_figures(topology)}), flush=True)


if __name__ == "__main__":
    home = sys.argv[1]
    asyncio.run(main(home, int(sys.argv[2]) if len(sys.argv) > 2 else 200_000,
                     int(sys.argv[3]) if len(sys.argv) > 3 else 32))
