// Enqueues 1,000 welcome emails in one bulk insert, the way an app would after a signup import.
import { createMailq } from 'mailq';
import config from './mailq.config.mjs';
import { sendWelcomeEmail } from './jobs.mjs';

const mq = createMailq({ databaseUrl: config.databaseUrl, jobs: [sendWelcomeEmail] });
await mq.migrate();
const users = Array.from({ length: 1000 }, (_, i) => ({ userId: i + 1, email: i % 250 === 7 ? `user${i}@invalid.example` : `user${i}@example.com` }));
const { dispatched } = await mq.dispatchMany(sendWelcomeEmail, users);
console.log(`dispatched ${dispatched} jobs to queue 'emails'`);
await mq.close();
