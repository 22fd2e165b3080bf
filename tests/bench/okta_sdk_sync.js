// okta_sdk_sync.js: what an admin would write instead of usersync, for the
// side-by-side benchmark (sdk_side_by_side.lua): the official Okta Node SDK
// (@okta/okta-sdk-nodejs) reads the org, plain HTTP with a pool of 8 writes
// Jira. The same mapping as the benchmark's usersync config, so the end
// states can be compared:
//   accounts   users whose status is active (ACTIVE, PASSWORD_EXPIRED,
//              LOCKED_OUT, RECOVERY, PROVISIONED) and that have a login:
//              name = login, display name = displayName, else first + last,
//              e-mail = email; the others get nothing (a first sync)
//   groups     every Okta group that is not BUILT_IN and whose name does not
//              match EXCLUDE, named as in Okta; plus "okta-synced" for every
//              account and "new-hires" for every account created
// Competent, not naive: paged reads, Jira's existing users and groups read
// first (nothing created twice), at most POOL requests in flight to Jira,
// keep-alive connections.
//
//   node okta_sdk_sync.js SDK_PREFIX OKTA_URL OKTA_TOKEN JIRA_URL JIRA_USER JIRA_PASSWORD
'use strict';
const [sdkPrefix, oktaUrl, oktaToken, jiraUrl, jiraUser, jiraPassword] = process.argv.slice(2);
const okta = require(sdkPrefix + '/node_modules/@okta/okta-sdk-nodejs');
const http = require('http');

const POOL = 8;
const EXCLUDE = /-(contractors|alumni|interns)( \d+)?$/;
const ACTIVE = new Set(['ACTIVE', 'PASSWORD_EXPIRED', 'LOCKED_OUT', 'RECOVERY', 'PROVISIONED']);
const ALL_USERS = ['okta-synced'];
const NEW_USERS = ['new-hires'];

const agent = new http.Agent({ keepAlive: true, maxSockets: POOL });
const auth = 'Basic ' + Buffer.from(jiraUser + ':' + jiraPassword).toString('base64');
const base = new URL(jiraUrl);

function jira(method, path, body) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? null : Buffer.from(JSON.stringify(body));
    const headers = { Authorization: auth, Accept: 'application/json', 'X-Atlassian-Token': 'no-check' };
    if (data) { headers['Content-Type'] = 'application/json'; headers['Content-Length'] = data.length; }
    const req = http.request({ host: base.hostname, port: base.port, path: '/rest/api/2' + path, method,
      headers, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode >= 400) {
          reject(new Error(method + ' ' + path + ' -> ' + res.statusCode + ' ' + text.slice(0, 200)));
        } else {
          resolve(text ? JSON.parse(text) : null);
        }
      });
    });
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

// Runs fn over items with at most POOL at once.
async function pool(items, fn) {
  let next = 0;
  const workers = [];
  for (let w = 0; w < POOL; w++) {
    workers.push((async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i]);
      }
    })());
  }
  await Promise.all(workers);
}

const q = encodeURIComponent;

async function main() {
  const client = new okta.Client({ orgUrl: oktaUrl, token: oktaToken });

  // Okta: users, groups, and the members of the groups that count (8 at once).
  const users = [];
  for await (const u of await client.userApi.listUsers({ limit: 200 })) users.push(u);
  const groups = [];
  for await (const g of await client.groupApi.listGroups({ limit: 1000 })) {
    if (g.type !== 'BUILT_IN' && !EXCLUDE.test(g.profile.name)) groups.push(g);
  }
  const groupsOf = new Map(); // user id -> [group name]
  await pool(groups, async (g) => {
    for await (const m of await client.groupApi.listGroupUsers({ groupId: g.id, limit: 1000 })) {
      if (!groupsOf.has(m.id)) groupsOf.set(m.id, []);
      groupsOf.get(m.id).push(g.profile.name);
    }
  });

  // Jira: the accounts and groups it has.
  const accounts = new Set();
  let page = await jira('GET', '/user/list?maxResults=2000');
  for (;;) {
    for (const a of page.values) accounts.add(a.name.toLowerCase());
    if (page.isLast || !page.nextCursor) break;
    page = await jira('GET', '/user/list?maxResults=2000&cursor=' + q(page.nextCursor));
  }
  const have = new Set();
  const picker = await jira('GET', '/groups/picker?maxResults=100000');
  for (const g of picker.groups) have.add(g.name.toLowerCase());

  // What to create.
  const create = [];
  const memberships = [];
  const wanted = new Map();
  for (const u of users) {
    const p = u.profile || {};
    if (!ACTIVE.has(u.status) || !p.login) continue;
    const name = p.login;
    if (accounts.has(name.toLowerCase())) continue;
    const first = p.firstName || null;
    const last = p.lastName || null;
    const display = p.displayName || ((first && last) ? first + ' ' + last : (first || last || name));
    create.push({ name, displayName: display, emailAddress: p.email || '' });
    for (const g of [...(groupsOf.get(u.id) || []), ...ALL_USERS, ...NEW_USERS]) {
      memberships.push({ group: g, name });
      if (!have.has(g.toLowerCase())) wanted.set(g.toLowerCase(), g);
    }
  }

  await pool([...wanted.values()], (g) => jira('POST', '/group', { name: g }));
  await pool(create, (a) => jira('POST', '/user', a));
  await pool(memberships, (m) => jira('POST', '/group/user?groupname=' + q(m.group), { name: m.name }));
  console.log(`created ${create.length} accounts, ${wanted.size} groups, ${memberships.length} memberships`);
  agent.destroy();
}

main().catch((e) => { console.error(e && e.stack || String(e)); process.exit(1); });
