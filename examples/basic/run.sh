#!/usr/bin/env bash
# The basic example end to end: create the database, enqueue 1,000 jobs, drain them, list failures.
set -euo pipefail
cd "$(dirname "$0")"
mailq() { node ../../bin/mailq.js "$@"; }
export MAILQ_DATABASE_URL="${MAILQ_DATABASE_URL:-mysql://root@127.0.0.1:3306/mailq_example}"
node -e "const u=new URL(process.env.MAILQ_DATABASE_URL);import('mysql2/promise').then(async m=>{u.pathname='/';const c=await m.createConnection(u.toString());await c.query('CREATE DATABASE IF NOT EXISTS \`'+process.env.MAILQ_DATABASE_URL.split('/').pop()+'\`');await c.end()})"
mailq migrate
node dispatch.mjs
mailq work --stop-when-empty --log-level warn
mailq failed
