// The rayrepl dashboard's page logic. One server-sent event stream
// (/api/dashboard/events) brings a snapshot of the cluster whenever it changes;
// each tab renders from the latest snapshot. No framework and no build step:
// the file is served as written, from the binary.
'use strict';

// ------------------------------------------------------------------ helpers

const $ = (id) => document.getElementById(id);

/** An element: h('td', {class: 'x', title: 't'}, child, 'text', ...). */
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'style') el.style.cssText = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

const SVG = 'http://www.w3.org/2000/svg';
function s(tag, attrs, ...kids) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const kid of kids) el.append(kid);
  return el;
}

function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)) + ' ' + units[i];
}

function fmtDuration(ms) {
  if (ms === null || ms === undefined || ms < 0) return '—';
  if (ms < 1000) return Math.round(ms) + ' ms';
  const sec = ms / 1000;
  if (sec < 60) return sec.toFixed(sec < 10 ? 2 : 1) + ' s';
  const m = Math.floor(sec / 60), r = Math.floor(sec % 60);
  if (m < 60) return `${m}m ${r}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

function fmtTime(ms) {
  if (!ms) return '—';
  const d = new Date(ms);
  const time = d.toLocaleTimeString([], {hour12: false});
  return d.toDateString() === new Date().toDateString() ? time : d.toLocaleDateString() + ' ' + time;
}

function fmtNum(x) {
  return Number.isInteger(x) ? String(x) : x.toFixed(x < 10 ? 2 : 1).replace(/\.?0+$/, '');
}

const short = (id, n = 8) => (id ? String(id).slice(0, n) : '—');
const mono = (text, title) => h('span', {class: 'mono', title: title || null}, text);
const idCell = (id, n) => (id ? mono(short(id, n), id) : h('span', {class: 'muted'}, '—'));
// Task and actor ids differ in their leading bytes' last digits and their
// tail, so they are shown whole.
const fullId = (id) => (id ? h('span', {class: 'mono id'}, id) : h('span', {class: 'muted'}, '—'));

// States as colours: green done or alive, yellow running or starting, red failed.
const STATE_CLASS = {
  ALIVE: 'ok', FINISHED: 'ok', SUCCEEDED: 'ok', CREATED: 'ok',
  RUNNING: 'run', PENDING_CREATION: 'run', RESTARTING: 'run', RESCHEDULING: 'run', PREPARED: 'run',
  PENDING: 'wait', PENDING_ARGS_AVAIL: 'wait', PENDING_NODE_ASSIGNMENT: 'wait', DEPENDENCIES_UNREADY: 'wait',
  FAILED: 'bad', DEAD: 'bad', INFEASIBLE: 'bad',
  STOPPED: 'off', REMOVED: 'off',
};
const stateClass = (st) => STATE_CLASS[st] || 'off';
const badge = (st) => h('span', {class: 'badge ' + stateClass(st)}, st || '—');

/** Fills a table: columns are [label, row => cell content, optional class]. */
function fillTable(table, columns, rows, opts = {}) {
  if (!table.tHead) {
    table.append(h('thead', {}, h('tr', {}, columns.map(([label, , cls]) => h('th', {class: cls}, label)))));
  }
  const body = h('tbody');
  if (!rows.length) {
    body.append(h('tr', {class: 'none'}, h('td', {colspan: columns.length}, opts.empty || 'Nothing yet.')));
  }
  for (const row of rows) {
    const tr = h('tr', {}, columns.map(([, get, cls]) => h('td', {class: cls}, get(row))));
    if (opts.key) tr.dataset.key = opts.key(row);
    if (opts.selected && opts.key && opts.key(row) === opts.selected) tr.classList.add('selected');
    if (opts.onclick) tr.addEventListener('click', () => opts.onclick(row));
    body.append(tr);
  }
  if (table.tBodies[0]) table.tBodies[0].replaceWith(body); else table.append(body);
}

/** A usage bar: used of total, with its text. Full CPUs are work being done,
 * so `busy` bars keep one colour; memory and store bars warn as they fill. */
function bar(used, total, text, busy = false) {
  if (!total) return h('span', {class: 'muted'}, '—');
  const pct = Math.max(0, Math.min(100, (used / total) * 100));
  const level = busy ? 'low' : pct >= 90 ? 'high' : pct >= 70 ? 'mid' : 'low';
  return h('div', {class: 'bar', title: pct.toFixed(0) + '%'},
    h('div', {class: 'fill ' + level, style: `width:${pct}%`}),
    h('span', {class: 'bar-text'}, text));
}

// A colour per function name, for the timeline and its legend.
// No reds: a red outline marks a failed attempt.
const PALETTE = ['#58a6ff', '#3fb950', '#d2a8ff', '#ffa657', '#56d4dd', '#f778ba', '#e3b341', '#8b949e'];
// Handed out in order of first sight (not hashed), so few names never share one.
const COLOURS = new Map();
function colourOf(name) {
  if (!COLOURS.has(name)) COLOURS.set(name, PALETTE[COLOURS.size % PALETTE.length]);
  return COLOURS.get(name);
}

// ------------------------------------------------------------------ state

const app = {
  snap: null,         // the latest snapshot
  offset: 0,          // server clock minus this browser's clock, ms
  tab: 'overview',
  route: [],          // the rest of the address: job id, or node id and file
  rendered: {},       // what each tab last drew, to skip redraws that change nothing
  jobLog: null,       // {key, socket}
  logTimer: null,
};

const serverNow = () => Date.now() + app.offset;

/** Jobs newest first (the API lists submitted jobs, then drivers). */
function newestJobs(jobs) {
  return jobs.slice().sort((a, b) => (b.start_time || Infinity) - (a.start_time || Infinity));
}

function jobKey(j) {
  return j.submission_id || ('driver-' + j.job_id);
}

// ------------------------------------------------------------------ live stream

function setLive(kind, text) {
  $('live').className = 'live ' + kind;
  $('live-text').textContent = text;
}

function connect() {
  const events = new EventSource('/api/dashboard/events');
  events.addEventListener('open', () => setLive('on', 'live'));
  events.addEventListener('snapshot', (e) => {
    const msg = JSON.parse(e.data);
    app.offset = msg.now_ms - Date.now();
    app.snap = msg.data;
    $('problem').hidden = true;
    setLive('on', 'live');
    render();
  });
  events.addEventListener('problem', (e) => {
    const msg = JSON.parse(e.data);
    showProblem(msg.data.message);
  });
  events.addEventListener('error', () => {
    if (events.readyState !== EventSource.CLOSED) {
      setLive('off', 'reconnecting…');
      return;
    }
    // Closed for good: usually a refused token. Ask why, then try again.
    setLive('off', 'disconnected');
    fetch('/api/version').then((r) => {
      if (r.status === 401 || r.status === 403) {
        showProblem('This browser is not signed in to the cluster (any more). ', h('a', {href: '/'}, 'Sign in again'));
      } else {
        setTimeout(connect, 3000);
      }
    }, () => setTimeout(connect, 3000));
  });
}

function showProblem(...what) {
  const banner = $('problem');
  banner.replaceChildren(...what);
  banner.hidden = false;
}

// ------------------------------------------------------------------ routing

const TABS = ['overview', 'jobs', 'tasks', 'actors', 'logs', 'placement-groups'];

function route() {
  const parts = location.hash.replace(/^#/, '').split('/').map(decodeURIComponent);
  app.tab = TABS.includes(parts[0]) ? parts[0] : 'overview';
  app.route = parts.slice(1).filter(Boolean);
  for (const a of document.querySelectorAll('#tabs a')) a.classList.toggle('active', a.dataset.tab === app.tab);
  for (const t of TABS) $('page-' + t).hidden = t !== app.tab;
  app.rendered = {};
  render();
}

// ------------------------------------------------------------------ rendering

const RENDER = {
  'overview': renderOverview,
  'jobs': renderJobs,
  'tasks': renderTasks,
  'actors': renderActors,
  'logs': renderLogs,
  'placement-groups': renderPlacementGroups,
};

function render() {
  const snap = app.snap;
  if (!snap) return;
  const alive = (rows, st) => rows.filter((r) => st.includes(r.state || r.status)).length;
  $('count-jobs').textContent = snap.jobs.length || '';
  $('count-tasks').textContent = snap.tasks.total || '';
  $('count-actors').textContent = alive(snap.actors, ['ALIVE']) || '';
  $('count-pgs').textContent = snap.placement_groups.length || '';
  $('tab-pgs').hidden = snap.placement_groups.length === 0;
  Object.keys(snap.tasks.by_name).sort().forEach(colourOf);
  $('footer').textContent = `rayrepl ${snap.version || ''} · session ${snap.session_name} · updated ${fmtTime(serverNow())}`;
  RENDER[app.tab]();
}

/** Whether `key` differs from what tab part `part` last drew (and remembers it). */
function changed(part, key) {
  const text = JSON.stringify(key);
  if (app.rendered[part] === text) return false;
  app.rendered[part] = text;
  return true;
}

// ---- overview

function resources(node) {
  const total = node.resources_total || {}, avail = node.resources_available || {};
  const used = (name) => (total[name] || 0) - (avail[name] ?? total[name] ?? 0);
  return {total, avail, used};
}

function renderOverview() {
  const snap = app.snap;
  drawTimeline($('overview-timeline'), $('overview-legend'));
  if (!changed('overview', [snap.nodes, snap.jobs, snap.tasks.by_state, snap.actors.length])) return;
  const nodes = snap.nodes;
  const live = nodes.filter((n) => n.state === 'ALIVE');
  let cpuTotal = 0, cpuUsed = 0, storeTotal = 0, storeUsed = 0;
  for (const n of live) {
    const r = resources(n);
    cpuTotal += r.total.CPU || 0;
    cpuUsed += r.used('CPU');
    storeTotal += n.object_store_capacity;
    storeUsed += n.object_store_used;
  }
  const by = snap.tasks.by_state || {};
  const pending = (by.PENDING_ARGS_AVAIL || 0) + (by.PENDING_NODE_ASSIGNMENT || 0);
  const card = (label, value, sub, cls) =>
    h('div', {class: 'card ' + (cls || '')}, h('div', {class: 'card-label'}, label),
      h('div', {class: 'card-value'}, value), h('div', {class: 'card-sub'}, sub || ''));
  $('cards').replaceChildren(
    card('Nodes', `${live.length}`, nodes.length > live.length ? `${nodes.length - live.length} dead` : 'all alive'),
    card('CPUs in use', `${fmtNum(cpuUsed)} / ${fmtNum(cpuTotal)}`, bar(cpuUsed, cpuTotal, '', true)),
    card('Object store', fmtBytes(storeUsed), bar(storeUsed, storeTotal, 'of ' + fmtBytes(storeTotal))),
    card('Tasks running', String(by.RUNNING || 0), `${pending} pending · ${by.FAILED || 0} failed`,
      by.RUNNING ? 'run' : ''),
    card('Jobs running', String(snap.jobs.filter((j) => j.status === 'RUNNING').length), `${snap.jobs.length} in all`),
    card('Actors alive', String(snap.actors.filter((a) => a.state === 'ALIVE').length), `${snap.actors.length} in all`),
  );

  fillTable($('nodes-table'), [
    ['State', (n) => badge(n.state)],
    ['Node', (n) => h('span', {}, mono(short(n.node_id, 12), n.node_id), n.is_head ? h('span', {class: 'tag'}, 'head') : null)],
    ['Host', (n) => h('span', {}, n.ip, h('span', {class: 'muted'}, n.hostname ? ' · ' + n.hostname : ''))],
    ['CPU', (n) => {
      const r = resources(n);
      return bar(r.used('CPU'), r.total.CPU, `${fmtNum(r.used('CPU'))} / ${fmtNum(r.total.CPU || 0)}`, true);
    }],
    ['Memory', (n) => n.host_memory
      ? bar(n.host_memory.total - n.host_memory.available, n.host_memory.total,
        `${fmtBytes(n.host_memory.total - n.host_memory.available)} / ${fmtBytes(n.host_memory.total)}`)
      : h('span', {class: 'muted', title: 'known only for nodes on the head\'s machine'}, '—')],
    ['Object store', (n) => bar(n.object_store_used, n.object_store_capacity,
      `${fmtBytes(n.object_store_used)} / ${fmtBytes(n.object_store_capacity)}`)],
    ['Workers', (n) => String(n.num_workers), 'num'],
    ['Other resources', (n) => {
      const r = resources(n);
      const names = Object.keys(r.total).filter((k) => k !== 'CPU' && k !== 'memory' && k !== 'object_store_memory');
      return names.length ? names.map((k) => h('span', {class: 'chip'}, `${k} ${fmtNum(r.avail[k] ?? 0)}/${fmtNum(r.total[k])}`))
        : h('span', {class: 'muted'}, '—');
    }],
    ['Up', (n) => fmtDuration(n.state === 'ALIVE' && n.start_time_ms ? serverNow() - n.start_time_ms : null), 'num'],
  ], nodes, {empty: 'No nodes have registered.'});

  fillTable($('overview-jobs-table'), jobColumns(), newestJobs(snap.jobs).slice(0, 5), {
    empty: 'No jobs yet. Submit one with rayrepl job submit.',
    key: jobKey,
    onclick: (j) => { location.hash = '#jobs/' + encodeURIComponent(jobKey(j)); },
  });
  $('overview-jobs-table').classList.add('clickable');
}

// ---- jobs

function jobColumns() {
  return [
    ['Job', (j) => mono(j.submission_id || j.job_id)],
    ['Status', (j) => badge(j.status)],
    ['Type', (j) => h('span', {class: 'muted'}, j.type === 'SUBMISSION' ? 'submitted' : 'driver')],
    ['Entrypoint', (j) => h('span', {class: 'mono ellipsis', title: j.entrypoint}, j.entrypoint)],
    ['Started', (j) => fmtTime(j.start_time)],
    ['Duration', (j) => fmtDuration(j.start_time ? (j.end_time || serverNow()) - j.start_time : null), 'num'],
  ];
}

function renderJobs() {
  const snap = app.snap;
  const selected = app.route[0] || null;
  if (changed('jobs', [snap.jobs, selected])) {
    fillTable($('jobs-table'), jobColumns(), newestJobs(snap.jobs), {
      empty: 'No jobs yet. Submit one with rayrepl job submit --address http://' + location.host + ' -- <command>.',
      key: jobKey,
      selected,
      onclick: (j) => { location.hash = '#jobs/' + encodeURIComponent(jobKey(j)); },
    });
  }
  const job = snap.jobs.find((j) => jobKey(j) === selected);
  renderJobDetail(job);
}

function renderJobDetail(job) {
  const panel = $('job-detail');
  if (!job) {
    closeJobLog();
    if (changed('job-detail', null)) panel.replaceChildren(h('p', {class: 'empty'}, 'Select a job to see its details and log.'));
    return;
  }
  const key = jobKey(job);
  const running = job.status === 'PENDING' || job.status === 'RUNNING';
  if (changed('job-detail', job)) {
    const field = (label, value) => value === null || value === undefined || value === ''
      ? null : [h('dt', {}, label), h('dd', {}, value)];
    const driver = job.driver_info ? `pid ${job.driver_info.pid} on ${job.driver_info.node_ip_address}` : null;
    const log = app.jobLog && app.jobLog.key === key ? $('job-log') : h('pre', {id: 'job-log', class: 'log'});
    panel.replaceChildren(
      h('div', {class: 'detail-head'}, h('h3', {}, job.submission_id || 'driver ' + job.job_id), badge(job.status)),
      h('dl', {},
        field('Submission id', job.submission_id && mono(job.submission_id)),
        field('Job id', job.job_id && mono(job.job_id)),
        field('Entrypoint', mono(job.entrypoint)),
        field('Driver', driver),
        field('Started', fmtTime(job.start_time)),
        field('Ended', job.end_time ? fmtTime(job.end_time) : null),
        field('Duration', fmtDuration(job.start_time ? (job.end_time || serverNow()) - job.start_time : null)),
        field('Exit code', job.driver_exit_code),
        field('Message', job.message)),
      h('div', {class: 'log-head'}, h('h3', {}, 'Log'),
        h('span', {class: 'muted', id: 'job-log-state'}, app.jobLog && app.jobLog.key === key ? app.jobLog.state : '')),
      log,
    );
  }
  if (app.jobLog && app.jobLog.key === key) return;
  closeJobLog();
  if (job.type !== 'SUBMISSION') {
    app.jobLog = {key, state: ''};
    $('job-log').replaceChildren(h('span', {class: 'muted'},
      'This driver was started by hand, so its output went to its own terminal. ' +
      'Its workers\' output is in the worker logs of each node (the Logs tab).'));
    return;
  }
  openJobLog(key, job.submission_id, running);
}

function setJobLogState(text) {
  if (app.jobLog) app.jobLog.state = text;
  const el = $('job-log-state');
  if (el) el.textContent = text;
}

function appendLog(pre, text) {
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.append(text);
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

function openJobLog(key, id, running) {
  const pre = $('job-log');
  pre.textContent = '';
  app.jobLog = {key, state: ''};
  const url = '/api/jobs/' + encodeURIComponent(id) + '/logs';
  if (!running) {
    setJobLogState('');
    fetch(url).then((r) => (r.ok ? r.json() : r.text().then((t) => Promise.reject(new Error(t)))))
      .then((body) => {
        if (app.jobLog && app.jobLog.key === key) {
          pre.textContent = body.logs || '';
          if (!body.logs) pre.append(h('span', {class: 'muted'}, '(no output)'));
        }
      }, (e) => { pre.textContent = 'Could not read the log: ' + e.message; });
    return;
  }
  // Follow while it runs: the Jobs API's websocket sends output as it is
  // written and closes once the job has ended and all of it was sent.
  const proto = location.protocol === 'https:' ? 'wss://' : 'ws://';
  const socket = new WebSocket(proto + location.host + url + '/tail');
  app.jobLog.socket = socket;
  setJobLogState('● following');
  socket.addEventListener('message', (e) => appendLog(pre, e.data));
  socket.addEventListener('close', (e) => {
    if (!app.jobLog || app.jobLog.socket !== socket) return;
    setJobLogState(e.code === 1000 ? 'ended' : 'disconnected');
  });
}

function closeJobLog() {
  if (app.jobLog && app.jobLog.socket) app.jobLog.socket.close();
  app.jobLog = null;
}

// ---- tasks

const TIMELINE_MS = 60_000;

function renderTasks() {
  const t = app.snap.tasks;
  if (changed('task-states', [t.by_state, t.total])) {
    const order = [['RUNNING', 'running'], ['PENDING_NODE_ASSIGNMENT', 'waiting for a worker'],
      ['PENDING_ARGS_AVAIL', 'waiting for arguments'], ['FINISHED', 'finished'], ['FAILED', 'failed']];
    $('task-states').replaceChildren(
      h('span', {class: 'chip big'}, h('b', {}, String(t.total)), ' attempts'),
      ...order.filter(([st]) => t.by_state[st]).map(([st, label]) =>
        h('span', {class: 'chip big ' + stateClass(st), title: st}, h('b', {}, String(t.by_state[st])), ' ' + label)));
  }
  if (changed('task-names', t.by_name)) {
    const names = Object.entries(t.by_name).map(([name, counts]) => ({name, counts}));
    const count = (st) => (r) => (r.counts[st] ? h('span', {class: 'c-' + stateClass(st)}, String(r.counts[st])) : '');
    fillTable($('task-names-table'), [
      ['Function', (r) => h('span', {}, h('span', {class: 'swatch', style: 'background:' + colourOf(r.name)}), mono(r.name))],
      ['Total', (r) => String(Object.values(r.counts).reduce((a, b) => a + b, 0)), 'num'],
      ['Finished', count('FINISHED'), 'num'],
      ['Running', count('RUNNING'), 'num'],
      ['Waiting for a worker', count('PENDING_NODE_ASSIGNMENT'), 'num'],
      ['Waiting for arguments', count('PENDING_ARGS_AVAIL'), 'num'],
      ['Failed', count('FAILED'), 'num'],
    ], names, {empty: 'No tasks have run yet.'});
  }
  const filter = $('task-filter').value.trim().toLowerCase();
  if (changed('tasks-table', [t.recent, filter])) {
    const rows = t.recent.slice().reverse().filter((r) => !filter ||
      [r.name, r.state, r.task_id, r.job_id, r.node_id, String(r.worker_pid), r.error_type]
        .some((v) => v && String(v).toLowerCase().includes(filter)));
    $('tasks-hint').textContent = t.total > t.recent.length ? `the newest ${t.recent.length} of ${t.total}` : '';
    fillTable($('tasks-table'), [
      ['Task', (r) => fullId(r.task_id)],
      ['Name', (r) => mono(r.name)],
      ['State', (r) => badge(r.state)],
      ['Type', (r) => h('span', {class: 'muted'}, r.type === 'ACTOR_TASK' ? 'actor' : 'task')],
      ['Job', (r) => mono(r.job_id)],
      ['Node', (r) => idCell(r.node_id)],
      ['Worker', (r) => (r.worker_pid ? 'pid ' + r.worker_pid : '—')],
      ['Started', (r) => fmtTime(r.start_time_ms)],
      ['Duration', (r) => fmtDuration(r.start_time_ms ? (r.end_time_ms || serverNow()) - r.start_time_ms : null), 'num'],
      ['Attempt', (r) => String(r.attempt_number), 'num'],
      ['Error', (r) => (r.error_type ? h('span', {class: 'c-bad', title: r.error_message || ''}, r.error_type) : '')],
    ], rows, {empty: filter ? 'No task matches the filter.' : 'No tasks have run yet.'});
  }
  drawTimeline($('timeline'), $('timeline-legend'));
}

/** The Gantt chart: each worker a row, each attempt a bar from start to end. */
function drawTimeline(box, legend) {
  const now = serverNow(), from = now - TIMELINE_MS;
  const tasks = (app.snap.tasks.recent || []).filter((t) =>
    t.start_time_ms && t.worker_pid && (!t.end_time_ms || t.end_time_ms >= from));
  const workers = [...new Set(tasks.map((t) => `${t.node_id || ''}:${t.worker_pid}`))].sort();
  const width = Math.max(box.clientWidth, 400), labelW = 150, rowH = 22, top = 8, axisH = 22;
  const height = top + Math.max(workers.length, 1) * rowH + axisH;
  const x = (ms) => labelW + ((ms - from) / TIMELINE_MS) * (width - labelW - 8);
  const svg = s('svg', {width, height, viewBox: `0 0 ${width} ${height}`, class: 'timeline'});
  for (let sec = 0; sec <= 60; sec += 10) {
    const gx = x(from + sec * 1000);
    svg.append(s('line', {x1: gx, x2: gx, y1: top, y2: height - axisH + 4, class: 'grid'}));
    svg.append(s('text', {x: gx, y: height - 6, class: 'axis', 'text-anchor': sec === 0 ? 'start' : sec === 60 ? 'end' : 'middle'},
      sec === 60 ? 'now' : `−${60 - sec} s`));
  }
  if (!workers.length) {
    svg.append(s('text', {x: labelW + 10, y: top + 15, class: 'axis'}, 'No task ran in the last minute.'));
  }
  workers.forEach((w, i) => {
    const [node, pid] = w.split(':');
    const y = top + i * rowH;
    if (i % 2 === 0) svg.append(s('rect', {x: 0, y, width, height: rowH, class: 'stripe'}));
    const label = s('text', {x: 6, y: y + 15, class: 'label'}, `${short(node, 6)} · pid ${pid}`);
    label.append(s('title', {}, `node ${node}, worker pid ${pid}`));
    svg.append(label);
  });
  const names = new Set();
  for (const t of tasks) {
    const row = workers.indexOf(`${t.node_id || ''}:${t.worker_pid}`);
    const start = Math.max(t.start_time_ms, from), end = t.end_time_ms || now;
    const x0 = x(start), bw = Math.max(x(end) - x0, 2);
    const cls = 'task' + (t.state === 'FAILED' ? ' failed' : '') + (t.end_time_ms ? '' : ' running');
    const rect = s('rect', {x: x0, y: top + row * rowH + 4, width: bw, height: rowH - 8, rx: 2, class: cls,
      fill: colourOf(t.name)});
    rect.append(s('title', {}, `${t.name} · ${t.state}\n${fmtDuration(end - t.start_time_ms)}` +
      `${t.end_time_ms ? '' : ' so far'}\ntask ${t.task_id}`));
    svg.append(rect);
    names.add(t.name);
  }
  box.replaceChildren(svg);
  if (changed(legend.id, [...names].sort())) {
    legend.replaceChildren(...[...names].sort().map((n) =>
      h('span', {class: 'legend-item'}, h('span', {class: 'swatch', style: 'background:' + colourOf(n)}), n)));
  }
}

// ---- actors

function renderActors() {
  const filter = $('actor-filter').value.trim().toLowerCase();
  const actors = app.snap.actors;
  if (!changed('actors', [actors, filter])) return;
  const rows = actors.slice().reverse().filter((a) => !filter ||
    [a.class_name, a.state, a.name, a.actor_id, a.job_id, String(a.pid)]
      .some((v) => v && String(v).toLowerCase().includes(filter)));
  fillTable($('actors-table'), [
    ['Actor', (a) => fullId(a.actor_id)],
    ['Class', (a) => mono(a.class_name)],
    ['Name', (a) => a.name || h('span', {class: 'muted'}, '—')],
    ['State', (a) => badge(a.state)],
    ['Job', (a) => mono(a.job_id)],
    ['Node', (a) => idCell(a.node_id)],
    ['Pid', (a) => (a.pid ? String(a.pid) : '—'), 'num'],
    ['Restarts', (a) => String(a.num_restarts), 'num'],
    ['Namespace', (a) => h('span', {class: 'muted'}, a.ray_namespace)],
    ['Death cause', (a) => (a.death_cause ? h('span', {class: 'ellipsis wide', title: a.death_cause.error_message},
      a.death_cause.error_message) : '')],
  ], rows, {empty: filter ? 'No actor matches the filter.' : 'No actors yet.'});
}

// ---- node logs

function renderLogs() {
  const nodes = app.snap.nodes.filter((n) => n.state === 'ALIVE');
  let [nodeId, file] = app.route;
  if (!nodeId && nodes.length) {
    location.replace('#logs/' + (nodes.find((n) => n.is_head) || nodes[0]).node_id);
    return;
  }
  if (changed('log-nodes', [nodes.map((n) => n.node_id), nodeId, file])) {
    $('log-nodes').replaceChildren(...nodes.map((n) => h('a', {
      href: '#logs/' + n.node_id, class: 'item' + (n.node_id === nodeId ? ' active' : ''), title: n.node_id,
    }, n.ip, n.is_head ? h('span', {class: 'tag'}, 'head') : null, h('span', {class: 'mono muted'}, ' ' + short(n.node_id, 6)))));
    if (!nodes.length) $('log-nodes').replaceChildren(h('p', {class: 'empty'}, 'No node is alive.'));
    listLogFiles(nodeId, file);
  }
  if (changed('log-file', [nodeId, file])) showLogFile(nodeId, file);
}

// Ray's groups of log files, in the order the list shows them.
const LOG_GROUPS = [['driver', 'Job drivers'], ['worker_out', 'Worker stdout'], ['worker_err', 'Worker stderr'],
  ['raylet', 'Node daemon'], ['gcs_server', 'Head'], ['internal', 'Other']];

function listLogFiles(nodeId, file) {
  const list = $('log-files');
  if (!nodeId) return;
  fetch('/api/v0/logs?node_id=' + encodeURIComponent(nodeId))
    .then((r) => (r.ok ? r.json() : r.text().then((t) => Promise.reject(new Error(t)))))
    .then((body) => {
      const groups = body.data.result;
      const known = new Set(LOG_GROUPS.map(([g]) => g));
      const order = [...LOG_GROUPS, ...Object.keys(groups).filter((g) => !known.has(g)).map((g) => [g, g])];
      const items = [];
      for (const [group, label] of order) {
        if (!groups[group] || !groups[group].length) continue;
        items.push(h('div', {class: 'group'}, label));
        for (const name of groups[group]) {
          items.push(h('a', {href: `#logs/${nodeId}/${encodeURIComponent(name)}`,
            class: 'item' + (name === file ? ' active' : '')}, h('span', {class: 'mono'}, name)));
        }
      }
      list.replaceChildren(...(items.length ? items : [h('p', {class: 'empty'}, 'No log files.')]));
    }, (e) => list.replaceChildren(h('p', {class: 'c-bad'}, e.message)));
}

const showing = (nodeId, file) => app.tab === 'logs' && app.route[0] === nodeId && app.route[1] === file;

function showLogFile(nodeId, file) {
  clearTimeout(app.logTimer);
  const view = $('log-view');
  $('log-title').textContent = file ? file : 'no file selected';
  if (!nodeId || !file) {
    view.replaceChildren(h('span', {class: 'muted'}, 'Pick a log file on the left.'));
    return;
  }
  view.textContent = '';
  const load = () => {
    const lines = $('log-lines').value;
    const query = `node_id=${encodeURIComponent(nodeId)}&filename=${encodeURIComponent(file)}&lines=${lines}`;
    fetch('/api/v0/logs/file?' + query)
      .then((r) => (r.ok ? r.text() : r.text().then((t) => Promise.reject(new Error(t)))))
      .then((text) => {
        if (!showing(nodeId, file)) return;
        const atBottom = view.scrollTop + view.clientHeight >= view.scrollHeight - 4;
        if (view.textContent !== text) {
          view.textContent = text;
          if (!text) view.append(h('span', {class: 'muted'}, '(empty)'));
          if (atBottom || !view.dataset.loaded) view.scrollTop = view.scrollHeight;
        }
        view.dataset.loaded = '1';
      }, (e) => { view.textContent = 'Could not read ' + file + ': ' + e.message; })
      .finally(() => {
        if ($('log-follow').checked && showing(nodeId, file)) app.logTimer = setTimeout(load, 2000);
      });
  };
  delete view.dataset.loaded;
  load();
}

// ---- placement groups

function renderPlacementGroups() {
  const groups = app.snap.placement_groups;
  if (!changed('pgs', groups)) return;
  fillTable($('pgs-table'), [
    ['Placement group', (g) => idCell(g.placement_group_id, 12)],
    ['Name', (g) => g.name || h('span', {class: 'muted'}, '—')],
    ['State', (g) => h('span', {}, badge(g.state), g.stats.scheduling_state === 'INFEASIBLE'
      ? h('span', {class: 'c-bad note-inline', title: 'No node has the resources one of its bundles needs'}, 'infeasible')
      : null)],
    ['Job', (g) => mono(g.creator_job_id)],
    ['Bundles', (g) => g.bundles.map((b) => h('span', {class: 'chip', title: b.node_id ? 'node ' + b.node_id : 'not placed'},
      `#${b.bundle_id} `, Object.entries(b.unit_resources).map(([k, v]) => `${k} ${fmtNum(v)}`).join(', '),
      h('span', {class: 'muted'}, b.node_id ? ' @ ' + short(b.node_id, 6) : ' unplaced')))],
    ['Detached', (g) => (g.is_detached ? 'yes' : '')],
    ['Created in', (g) => (g.state === 'CREATED' ? fmtDuration(g.stats.end_to_end_creation_latency_ms) : '—'), 'num'],
  ], groups.slice().reverse(), {empty: 'No placement groups.'});
}

// ------------------------------------------------------------------ start

window.addEventListener('hashchange', route);
$('task-filter').addEventListener('input', () => app.snap && renderTasks());
$('actor-filter').addEventListener('input', () => app.snap && renderActors());
$('log-refresh').addEventListener('click', () => { app.rendered['log-nodes'] = null; render(); });
$('log-lines').addEventListener('change', () => { app.rendered['log-file'] = null; render(); });
$('log-follow').addEventListener('change', () => { app.rendered['log-file'] = null; render(); });
// The timeline slides with the clock between snapshots, but holds still under
// the mouse so a bar's tooltip can be read.
const TIMELINES = {overview: ['overview-timeline', 'overview-legend'], tasks: ['timeline', 'timeline-legend']};
setInterval(() => {
  const ids = TIMELINES[app.tab];
  if (app.snap && ids && !document.hidden && !$(ids[0]).matches(':hover')) drawTimeline($(ids[0]), $(ids[1]));
}, 500);
route();
connect();
