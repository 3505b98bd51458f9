/** Table names, all behind one configurable prefix so mailq can share a database with an app. */
export interface TableNames {
  jobs: string;
  failedJobs: string;
  migrations: string;
}

export function tableNames(prefix = ''): TableNames {
  return {
    jobs: `${prefix}jobs`,
    failedJobs: `${prefix}failed_jobs`,
    migrations: `${prefix}mailq_migrations`,
  };
}
