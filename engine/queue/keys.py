"""Every Redis key name, built in one place (as arq's constants.py).

Layout (``ns`` is QueueConfig.namespace, ``J`` a job id, ``c`` a chunk number):

  {ns}:jobs              zset   job id -> created (ms)            index of all jobs
  {ns}:job:J             hash   job meta + counters (see docs/ARCHITECTURE.md)
  {ns}:job:J:st          string one state byte per recipient index
  {ns}:job:J:ck          hash   c -> msgpack records; "c#" -> packed indices (>I4 each)
  {ns}:job:J:ready       list   chunk numbers ready to be claimed
  {ns}:job:J:ev          stream one entry per delivery attempt / final outcome
  {ns}:lane:tx           list   transactional job ids with ready chunks (round robin)
  {ns}:lane:bulk         list   bulk job ids with ready chunks (round robin)
  {ns}:lease             zset   "J:c" -> lease expiry (ms)
  {ns}:owner             hash   "J:c" -> the lease: "worker token/claim number" (new every claim)
  {ns}:claims            hash   "J:c" -> times claimed (poison detection)
  {ns}:retry             zset   "J:c" -> due time (ms) of a retry chunk
  {ns}:quarantine        hash   "J:c" -> reason
  {ns}:wake              list   markers idle workers block on (bulk)
  {ns}:wake:tx           list   markers the transactional claimer blocks on
  {ns}:workers           zset   worker token -> last heartbeat (ms)
  {ns}:sites             set    shaping buckets seen (sites, or "domain:D" with an override)
  {ns}:site:B            hash   adaptive limits and state of bucket B (see engine/queue/sites.py)
  {ns}:site:B:conns      zset   connection id -> slot expiry (ms): connections open, all workers
  {ns}:site:B:new        zset   connection id -> opened (ms): new connections in the last minute
  {ns}:site:B:log        stream every change of limits, with its cause
  {ns}:site:B:retry      zset   retry chunk "J:c" -> due (ms), for retry-now
  {ns}:route:D           string msgpack MX route (or DNS failure) of domain D, TTL = the answer's
  {ns}:route:D:busy      string worker token looking D up now (PX dns.timeout + 1 s)

Scripts that walk several jobs (claim, reap, promote) build job keys from the
namespace passed in ARGV: bulkmail targets one Redis (or a primary with
replicas), not Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    ns: str = "bm"

    @property
    def jobs(self) -> str:
        return f"{self.ns}:jobs"

    def job(self, job_id: str) -> str:
        return f"{self.ns}:job:{job_id}"

    def states(self, job_id: str) -> str:
        return f"{self.ns}:job:{job_id}:st"

    def chunks(self, job_id: str) -> str:
        return f"{self.ns}:job:{job_id}:ck"

    def ready(self, job_id: str) -> str:
        return f"{self.ns}:job:{job_id}:ready"

    def events(self, job_id: str) -> str:
        return f"{self.ns}:job:{job_id}:ev"

    def lane(self, priority: str) -> str:
        return f"{self.ns}:lane:{'tx' if priority == 'transactional' else 'bulk'}"

    @property
    def lease(self) -> str:
        return f"{self.ns}:lease"

    @property
    def owner(self) -> str:
        return f"{self.ns}:owner"

    @property
    def claims(self) -> str:
        return f"{self.ns}:claims"

    @property
    def retry(self) -> str:
        return f"{self.ns}:retry"

    @property
    def quarantine(self) -> str:
        return f"{self.ns}:quarantine"

    @property
    def wake(self) -> str:
        return f"{self.ns}:wake"

    @property
    def wake_tx(self) -> str:
        return f"{self.ns}:wake:tx"

    @property
    def workers(self) -> str:
        return f"{self.ns}:workers"

    @property
    def sites(self) -> str:
        return f"{self.ns}:sites"

    def site(self, bucket: str) -> str:
        return f"{self.ns}:site:{bucket}"

    def site_conns(self, bucket: str) -> str:
        return f"{self.ns}:site:{bucket}:conns"

    def site_new(self, bucket: str) -> str:
        return f"{self.ns}:site:{bucket}:new"

    def site_log(self, bucket: str) -> str:
        return f"{self.ns}:site:{bucket}:log"

    def site_retry(self, bucket: str) -> str:
        return f"{self.ns}:site:{bucket}:retry"

    def route(self, domain: str) -> str:
        return f"{self.ns}:route:{domain}"

    def job_keys(self, job_id: str) -> list[str]:
        return [self.job(job_id), self.states(job_id), self.chunks(job_id), self.ready(job_id), self.events(job_id)]
