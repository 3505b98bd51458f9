/**
 * The config file of the chaos run's worker processes (`mailq work --config …`). Leases stay well
 * above the longest database outage the run causes (a restart is down for seconds), so a lease
 * never lapses under a live run; the sweep runs often so that a reservation a dead process left
 * behind comes back within the drain.
 */
export default {
  jobs: ['./ledger-job.js'],
  worker: { leaseGrace: '10s', sweepInterval: '2s', heartbeat: '1s', sleep: '50ms', stopWait: '15s' },
};
