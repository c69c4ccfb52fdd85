/* v2x-controller dashboard and API overview.
 * Plain ES2020, no dependencies and nothing from the internet: the gateway may be offline.
 * The page is served with a strict CSP, so all behaviour lives here and all styling in style.css
 * (element.style is only used for computed widths, which CSSOM allows). */
'use strict';

(() => {
  const SVGNS = 'http://www.w3.org/2000/svg';
  const SOC_OLD_MS = 15 * 60 * 1000;
  const STREAM_SILENT_MS = 8000; // the daemon sends `now` every 2 s
  const MODES = [['auto', 'Auto'], ['charge_now', 'Charge now'], ['no_discharge', 'No discharge']];

  const state = {
    csrf: null, status: null, flows: null, vehicles: [], batteries: [], chargers: [], plan: null, history: null,
    money: null, events: [], live: false, lastStreamAt: 0, stream: null, started: false,
  };

  // ------------------------------------------------------------------ small helpers

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const pad = (n) => String(n).padStart(2, '0');

  /** An HTML element with attributes and children (strings become text, never HTML). */
  function h(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === false || v == null) continue;
      if (k === 'text') node.textContent = v;
      else node.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children) if (c != null) node.append(c);
    return node;
  }

  /** An SVG element appended to parent. */
  function s(parent, tag, attrs = {}, text) {
    const node = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs)) if (v != null) node.setAttribute(k, v);
    if (text != null) node.textContent = text;
    parent.append(node);
    return node;
  }

  class ApiError extends Error {
    constructor(status, message, field) { super(message); this.status = status; this.field = field; }
  }

  /** Fetch JSON from the daemon; writes carry the CSRF token. 204 gives null. */
  async function api(path, { method = 'GET', body } = {}) {
    const headers = { Accept: 'application/json' };
    if (method !== 'GET') {
      headers['Content-Type'] = 'application/json';
      if (state.csrf) headers['X-CSRF-Token'] = state.csrf;
    }
    const res = await fetch(path, {
      method, headers, credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.status === 204) return null;
    let data = null;
    try { data = await res.json(); } catch (_) { /* not JSON: keep null */ }
    if (!res.ok) {
      if (res.status === 401 && path !== '/api/login') showLogin();
      throw new ApiError(res.status, (data && data.error) || `HTTP ${res.status}`, data && data.field);
    }
    return data;
  }

  // ------------------------------------------------------------------ time in the site's zone

  const fmtCache = new Map();
  const siteZone = () => (state.status && state.status.timezone) || undefined;

  /** A cached Intl.DateTimeFormat for the site zone (formatters are costly to build). */
  function formatter(opts, locale) {
    // 24-hour clock everywhere: the plan's reasons (from the daemon) say "21:27", and so do the axes.
    if (opts.hour && !opts.hourCycle) opts = { ...opts, hourCycle: 'h23' };
    const key = JSON.stringify([locale, siteZone(), opts]);
    if (!fmtCache.has(key)) {
      let f;
      try { f = new Intl.DateTimeFormat(locale, { ...opts, timeZone: siteZone() }); }
      catch (_) { f = new Intl.DateTimeFormat(locale, opts); } // unknown zone name: browser zone
      fmtCache.set(key, f);
    }
    return fmtCache.get(key);
  }

  /** Wall-clock parts of an instant in the site zone. */
  function zoneParts(ms) {
    const f = formatter({
      hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit',
      hour: '2-digit', minute: '2-digit', second: '2-digit', weekday: 'short',
    }, 'en-US');
    const p = {};
    for (const { type, value } of f.formatToParts(new Date(ms))) p[type] = value;
    return { y: +p.year, mo: +p.month, d: +p.day, h: +p.hour % 24, mi: +p.minute, s: +p.second };
  }

  /** The site's UTC offset (ms) at an instant. */
  function zoneOffset(ms) {
    const p = zoneParts(ms);
    return Date.UTC(p.y, p.mo - 1, p.d, p.h, p.mi, p.s) - Math.floor(ms / 1000) * 1000;
  }

  /** "YYYY-MM-DDTHH:MM" read as site wall-clock time -> ISO with the site's offset at that time. */
  function localInputToIso(value) {
    const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(value || '');
    if (!m) return null;
    const wall = Date.UTC(+m[1], m[2] - 1, +m[3], +m[4], +m[5]);
    // First guess with the offset at the wall time read as UTC, then again at the real instant:
    // the two differ only within hours of a DST change.
    const offset = zoneOffset(wall - zoneOffset(wall));
    const mins = Math.abs(offset) / 60000;
    const sign = offset < 0 ? '-' : '+';
    return `${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:00${sign}${pad(Math.floor(mins / 60))}:${pad(mins % 60)}`;
  }

  /** ISO instant -> "YYYY-MM-DDTHH:MM" in the site zone, for a datetime-local input. */
  function isoToLocalInput(iso) {
    const p = zoneParts(Date.parse(iso));
    return `${p.y}-${pad(p.mo)}-${pad(p.d)}T${pad(p.h)}:${pad(p.mi)}`;
  }

  const dayKey = (ms) => { const p = zoneParts(ms); return `${p.y}-${p.mo}-${p.d}`; };
  const fmtClock = (ms) => formatter({ hour: '2-digit', minute: '2-digit' }).format(new Date(ms));

  /** "14:05", "tomorrow 07:30" or "Sat 12 Dec 07:30": short, relative to today in the site zone. */
  function fmtWhen(iso) {
    const ms = typeof iso === 'number' ? iso : Date.parse(iso);
    const now = Date.now();
    if (dayKey(ms) === dayKey(now)) return fmtClock(ms);
    if (dayKey(ms) === dayKey(now + 864e5)) return `tomorrow ${fmtClock(ms)}`;
    if (dayKey(ms) === dayKey(now - 864e5)) return `yesterday ${fmtClock(ms)}`;
    return formatter({ weekday: 'short', day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' })
      .format(new Date(ms));
  }

  function fmtAge(ms) {
    const min = Math.round(ms / 60000);
    return min < 90 ? `${min} min` : `${Math.round(min / 60)} h`;
  }

  // ------------------------------------------------------------------ number formats

  function fmtPower(w) {
    if (w == null) return '—';
    const a = Math.abs(w);
    return a < 1000 ? `${Math.round(a)} W` : `${(a / 1000).toFixed(a < 10000 ? 1 : 0)} kW`;
  }

  function fmtMoney(v, digits = 2) {
    const currency = (state.money && state.money.currency) || (state.status && state.status.currency) || 'EUR';
    try {
      return new Intl.NumberFormat(undefined, {
        style: 'currency', currency, minimumFractionDigits: digits, maximumFractionDigits: digits,
      }).format(v);
    } catch (_) { return `${v.toFixed(digits)} ${currency}`; }
  }

  const fmtPct = (v) => (v == null ? '—' : `${Math.round(v)} %`);

  // ------------------------------------------------------------------ login

  function showLogin() {
    $('#app').hidden = true;
    $('#login').hidden = false;
    setTimeout(() => { const p = $('#login-form input[name=password]'); if (p) p.focus(); }, 0);
  }

  async function onLogin(ev) {
    ev.preventDefault();
    const form = ev.currentTarget;
    const error = $('#login-error');
    error.textContent = '';
    form.querySelector('button').disabled = true;
    try {
      const answer = await api('/api/login', { method: 'POST', body: { password: form.password.value } });
      state.csrf = answer.csrf_token;
      form.password.value = '';
      $('#login').hidden = true;
      start();
    } catch (e) {
      error.textContent = e.message;
    } finally {
      form.querySelector('button').disabled = false;
    }
  }

  // ------------------------------------------------------------------ "Now": flows and car cards

  function renderStatus() {
    const st = state.status;
    if (!st) return;
    const pill = $('#site-status');
    const words = [st.status];
    if (st.safe_mode) words.push('safe mode');
    if (st.grid_lost) words.push('grid lost');
    pill.textContent = words.join(' · ');
    pill.className = `pill status-${st.status}${st.safe_mode || st.grid_lost ? ' status-unhealthy' : ''}`;
    pill.hidden = false;
    const lines = st.degraded.map((d) => `${d.what}: ${d.why}`);
    if (st.safe_mode_reasons.length) lines.push(`Safe mode: ${st.safe_mode_reasons.join(', ')}`);
    if (st.stale_meters.length) lines.push(`No fresh reading from: ${st.stale_meters.join(', ')}`);
    const box = $('#degraded');
    box.textContent = lines.join(' · ');
    box.hidden = lines.length === 0;
    $('#version').textContent = `v${st.version}`;
  }

  function setFlow(name, w, dirWords, stale) {
    const tile = $(`[data-flow="${name}"]`);
    tile.querySelector('.flow-value').textContent = fmtPower(w);
    tile.querySelector('.flow-dir').textContent = w == null ? 'no reading' : dirWords(w);
    tile.classList.toggle('is-stale', stale || w == null);
    tile.classList.toggle('is-export', name === 'grid' && w != null && w < -20);
  }

  function renderFlows() {
    const f = state.flows;
    if (!f) return;
    const stale = (m) => f.stale.includes(m);
    setFlow('grid', f.grid_w, (w) => (w > 20 ? '↓ importing' : w < -20 ? '↑ exporting' : 'balanced'), stale('grid'));
    setFlow('pv', f.pv_w, (w) => (w > 20 ? 'producing' : 'idle'), stale('pv'));
    setFlow('home', f.home_w, () => 'using', stale('home'));
    const batteryTile = $('[data-flow="battery"]');
    batteryTile.hidden = !state.batteries.length;
    if (state.batteries.length) {
      setFlow('battery', f.batteries_w, (w) => (w > 20 ? 'charging' : w < -20 ? 'discharging' : 'idle'), false);
    }
    $('#now-at').textContent = fmtClock(Date.parse(f.at));
  }

  /** Build one car card: structure once, values updated in place (keeps the form's typing). */
  function buildCar(v) {
    const select = h('select', { class: 'mode-select', 'data-vehicle': v.id, 'aria-label': `Mode for ${v.name}` },
      ...MODES.map(([value, label]) => h('option', { value, text: label })));
    select.addEventListener('change', () => onMode(v.id, select));
    // novalidate: the daemon checks the values and its message is shown next to the form
    const form = h('form', { class: 'departure-form', 'data-vehicle': v.id, novalidate: true },
      h('label', {}, 'Leave at', h('input', { type: 'datetime-local', name: 'at', required: true })),
      h('label', {}, 'Target %', h('input', { type: 'number', name: 'target', min: 0, max: 100, step: 1, required: true })),
      h('button', { type: 'submit', text: 'Save' }));
    form.addEventListener('submit', (ev) => onDeparture(ev, v.id));
    form.addEventListener('input', () => { form.dataset.dirty = '1'; });
    const clear = h('button', { type: 'button', class: 'clear-departure secondary', 'data-vehicle': v.id, text: 'Back to schedule' });
    clear.addEventListener('click', () => onClear(v.id));

    return h('article', { class: 'car', 'data-vehicle': v.id },
      h('header', { class: 'car-head' },
        h('h3', { class: 'car-name' }),
        h('span', { class: 'stale-badge', hidden: true, title: '' }, 'STALE', h('small', { class: 'stale-why' })),
        h('span', { class: 'car-plug pill' })),
      h('div', { class: 'car-line' }, h('span', { class: 'soc-value' }), h('span', { class: 'car-power' })),
      h('div', { class: 'soc-bar', role: 'img' },
        h('div', { class: 'soc-reserve' }), h('div', { class: 'soc-fill' }), h('div', { class: 'soc-target' })),
      h('div', { class: 'soc-scale' }),
      h('p', { class: 'car-reason' }),
      h('p', { class: 'car-departure' }),
      h('p', { class: 'car-mode muted' }),
      h('div', { class: 'car-controls' },
        h('label', { class: 'mode-label' }, 'Mode', select), form, clear,
        h('p', { class: 'control-message', 'data-vehicle': v.id, role: 'status' })));
  }

  /** Why a car's numbers should not be trusted; empty when they are fresh. */
  function staleReasons(v) {
    const why = [];
    if (!state.live) why.push('connection lost');
    if (state.status && state.status.stale_meters.length) why.push(`meters: ${state.status.stale_meters.join(', ')}`);
    if (v.soc_percent == null) why.push('SoC unknown');
    else if (!v.soc_measured) why.push('SoC estimated');
    if (v.soc_at && Date.now() - Date.parse(v.soc_at) > SOC_OLD_MS) why.push(`SoC ${fmtAge(Date.now() - Date.parse(v.soc_at))} old`);
    return why;
  }

  function departureText(v) {
    if (!v.departure_at) return 'No departure planned';
    const source = { override: 'one-off', car: "car's own", schedule: 'weekly schedule' }[v.departure_source] || v.departure_source;
    const target = v.target_soc_percent == null ? '' : ` → ${fmtPct(v.target_soc_percent)}`;
    return `Leaves ${fmtWhen(v.departure_at)}${target}${source ? ` (${source})` : ''}`;
  }

  function powerText(v) {
    const w = v.measured_power_w != null ? v.measured_power_w : v.setpoint_w;
    if (!v.plugged_in) return { text: 'not plugged in', cls: '' };
    if (w > 50) return { text: `charging ${fmtPower(w)}`, cls: 'charging' };
    if (w < -50) return { text: `discharging ${fmtPower(w)}`, cls: 'discharging' };
    return { text: 'idle', cls: '' };
  }

  function updateCar(card, v, index) {
    card.className = `car car-${index % 4}`;
    $('.car-name', card).textContent = v.name;
    const plug = $('.car-plug', card);
    plug.textContent = v.plugged_in ? (v.v2l_active ? 'plugged · V2L' : 'plugged in') : 'away';
    plug.classList.toggle('off', !v.plugged_in);
    $('.soc-value', card).textContent = fmtPct(v.soc_percent);
    const power = powerText(v);
    const pw = $('.car-power', card);
    pw.textContent = power.text;
    pw.className = `car-power ${power.cls}`;

    // One bar: fill = SoC, shaded zone = reserve, tick = departure target.
    const bar = $('.soc-bar', card);
    const clamp = (x) => Math.max(0, Math.min(100, x));
    $('.soc-fill', bar).style.width = `${clamp(v.soc_percent || 0)}%`;
    $('.soc-reserve', bar).style.width = `${clamp(v.reserve_percent)}%`;
    const target = $('.soc-target', bar);
    target.hidden = v.target_soc_percent == null;
    if (v.target_soc_percent != null) target.style.left = `${clamp(v.target_soc_percent)}%`;
    bar.setAttribute('aria-label', `SoC ${fmtPct(v.soc_percent)}, reserve ${fmtPct(v.reserve_percent)}, target ${fmtPct(v.target_soc_percent)}`);
    $('.soc-scale', card).textContent = `reserve ${fmtPct(v.reserve_percent)}` +
      (v.target_soc_percent != null ? ` · target ${fmtPct(v.target_soc_percent)}` : '') +
      ` · ${v.capacity_kwh} kWh`;

    $('.car-reason', card).textContent = v.reason || (v.plugged_in ? 'Waiting for a plan' : 'Not plugged in');
    $('.car-departure', card).textContent = departureText(v);
    const modeLabel = Object.fromEntries(MODES)[v.mode] || v.mode;
    const charger = state.chargers.find((c) => c.id === v.charger_id);
    $('.car-mode', card).textContent = `Mode: ${modeLabel}` +
      (charger ? ` · charger ${charger.id} ${charger.connected ? (charger.status || 'connected') : 'offline'}` : '');

    const why = staleReasons(v);
    const badge = $('.stale-badge', card);
    badge.hidden = why.length === 0;
    badge.title = why.join('; ');
    $('.stale-why', badge).textContent = why.length ? ` ${why[0]}` : '';

    updateControls(card, v);
  }

  /** Reflect the daemon's values in the controls, but never under the user's fingers. */
  function updateControls(card, v) {
    const select = $('.mode-select', card);
    if (document.activeElement !== select && !select.dataset.pending) select.value = v.mode;
    const form = $('.departure-form', card);
    if (!form.dataset.dirty && !form.contains(document.activeElement)) {
      form.at.value = v.departure_at ? isoToLocalInput(v.departure_at) : '';
      form.target.value = v.target_soc_percent != null ? Math.round(v.target_soc_percent) : '';
    }
    $('.clear-departure', card).classList.toggle('inactive', v.departure_source !== 'override');
  }

  function renderCars() {
    const box = $('#cars');
    const ids = state.vehicles.map((v) => v.id).join('|');
    if (box.dataset.ids !== ids) { // the fleet changed: rebuild, else update in place
      box.replaceChildren(...state.vehicles.map(buildCar));
      box.dataset.ids = ids;
      if (!state.vehicles.length) box.append(h('p', { class: 'empty', text: 'No cars configured.' }));
    }
    state.vehicles.forEach((v, i) => updateCar(box.querySelector(`.car[data-vehicle="${CSS.escape(v.id)}"]`), v, i));
  }

  // ------------------------------------------------------------------ home batteries

  const BATTERY_CONTROL = {
    observe: 'own mode (observed)', idle: 'waiting for a command', ok: 'following the plan',
    refused: 'the inverter refused the last command', unreachable: 'not reachable', released: 'back in its own mode',
  };

  function buildBattery(b) {
    return h('article', { class: 'car battery', 'data-battery': b.id },
      h('header', { class: 'car-head' }, h('h3', { class: 'car-name' }), h('span', { class: 'car-plug pill battery-mode' })),
      h('div', { class: 'car-line' }, h('span', { class: 'soc-value' }), h('span', { class: 'car-power' })),
      h('div', { class: 'soc-bar', role: 'img' }, h('div', { class: 'soc-reserve' }), h('div', { class: 'soc-fill' })),
      h('div', { class: 'soc-scale' }),
      h('p', { class: 'battery-plan' }),
      h('p', { class: 'battery-control muted' }));
  }

  function batteryPowerText(w) {
    if (w == null) return { text: 'power unknown', cls: '' };
    if (w > 50) return { text: `charging ${fmtPower(w)}`, cls: 'charging' };
    if (w < -50) return { text: `discharging ${fmtPower(w)}`, cls: 'discharging' };
    return { text: 'idle', cls: '' };
  }

  function updateBattery(card, b) {
    $('.car-name', card).textContent = b.name;
    $('.battery-mode', card).textContent = b.mode === 'auto' ? 'own mode' : b.mode;
    $('.soc-value', card).textContent = fmtPct(b.soc_percent);
    const power = batteryPowerText(b.power_w);
    const pw = $('.car-power', card);
    pw.textContent = power.text;
    pw.className = `car-power ${power.cls}`;
    const clamp = (x) => Math.max(0, Math.min(100, x));
    const bar = $('.soc-bar', card);
    $('.soc-fill', bar).style.width = `${clamp(b.soc_percent || 0)}%`;
    $('.soc-reserve', bar).style.width = `${clamp(b.floor_percent)}%`;
    bar.setAttribute('aria-label', `SoC ${fmtPct(b.soc_percent)}, floor ${fmtPct(b.floor_percent)}`);
    $('.soc-scale', card).textContent = `floor ${fmtPct(b.floor_percent)} · ${b.capacity_kwh} kWh`;
    $('.battery-plan', card).textContent = b.planned_power_w == null ? 'No plan for it now'
      : `Plan now: ${batteryPowerText(b.planned_power_w).text}`;
    const control = $('.battery-control', card);
    const words = BATTERY_CONTROL[b.control_status] || b.control_status;
    control.textContent = `Control ${b.control}: ${words}${b.control_detail ? ` (${b.control_detail})` : ''}`;
    control.classList.toggle('problem', b.control_status === 'refused' || b.control_status === 'unreachable');
  }

  function renderBatteries() {
    const box = $('#batteries');
    const list = state.batteries || [];
    const ids = list.map((b) => b.id).join('|');
    if (box.dataset.ids !== ids) {
      box.replaceChildren(...list.map(buildBattery));
      box.dataset.ids = ids;
    }
    box.hidden = !list.length;
    list.forEach((b) => updateBattery(box.querySelector(`.battery[data-battery="${CSS.escape(b.id)}"]`), b));
  }

  // ------------------------------------------------------------------ controls

  function say(id, text, kind) {
    const msg = $(`.control-message[data-vehicle="${CSS.escape(id)}"]`);
    msg.textContent = text;
    msg.className = `control-message ${kind || ''}`;
  }

  /** Send a driver command and tell the user; on success fetch what changed. */
  async function command(id, method, path, body, form) {
    say(id, 'saving…', 'pending');
    if (form) $$('[aria-invalid]', form).forEach((i) => i.removeAttribute('aria-invalid'));
    try {
      await api(path, { method, body });
      say(id, 'saved — re-planning…', 'ok');
      refreshAfterCommand();
      return true;
    } catch (e) {
      say(id, e.field ? `${e.message}` : e.message, 'error');
      const input = form && { at: form.at, target_soc_percent: form.target }[e.field];
      if (input) input.setAttribute('aria-invalid', 'true');
      return false;
    }
  }

  async function onMode(id, select) {
    select.dataset.pending = '1';
    await command(id, 'POST', `/api/vehicles/${encodeURIComponent(id)}/mode`, select.value);
    delete select.dataset.pending;
  }

  async function onDeparture(ev, id) {
    ev.preventDefault();
    const form = ev.currentTarget;
    const at = localInputToIso(form.at.value);
    const target = Number(form.target.value);
    if (!at) { say(id, 'Choose a departure date and time', 'error'); return; }
    if (form.target.value === '' || !Number.isFinite(target)) { say(id, 'Enter a target %', 'error'); return; }
    const ok = await command(id, 'POST', `/api/vehicles/${encodeURIComponent(id)}/departure`,
      { at, target_soc_percent: target }, form);
    if (ok) delete form.dataset.dirty;
  }

  async function onClear(id) {
    const form = $(`.departure-form[data-vehicle="${CSS.escape(id)}"]`);
    const ok = await command(id, 'DELETE', `/api/vehicles/${encodeURIComponent(id)}/overrides/departure`);
    if (ok && form) delete form.dataset.dirty;
  }

  async function refreshAfterCommand() {
    const [vehicles, plan] = await Promise.allSettled([api('/api/vehicles'), api('/api/plan')]);
    if (vehicles.status === 'fulfilled') { state.vehicles = vehicles.value; renderCars(); }
    if (plan.status === 'fulfilled' && plan.value) { state.plan = plan.value; renderPlan(); }
  }

  // ------------------------------------------------------------------ chart helpers

  /** About `count` round tick values covering [min, max]. */
  function niceTicks(min, max, count) {
    const span = max - min || 1;
    const raw = span / count;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((x) => x >= raw);
    const ticks = [];
    for (let t = Math.ceil(min / step) * step; t <= max + step * 1e-9; t += step) ticks.push(+t.toFixed(10));
    return ticks;
  }

  /** Local-time ticks: every n hours on the hour in the site zone, chosen to fit the width. */
  function timeTicks(t0, t1, width) {
    const hours = (t1 - t0) / 36e5;
    const every = [1, 2, 3, 4, 6, 12, 24].find((n) => (hours / n) * 46 <= width) || 24;
    const ticks = [];
    for (let t = Math.ceil(t0 / 9e5) * 9e5; t <= t1; t += 9e5) { // 15-min grid: works for :30 zones
      const p = zoneParts(t);
      if (p.mi === 0 && p.h % every === 0) {
        const label = p.h === 0
          ? formatter({ weekday: 'short' }).format(new Date(t))
          : `${pad(p.h)}:00`;
        ticks.push({ t, label, midnight: p.h === 0 });
      }
    }
    return ticks;
  }

  /** A chart's SVG sized to its container's current width (re-drawn on resize). */
  function newChart(container, height) {
    const width = Math.max(280, Math.round(container.clientWidth || 600));
    const svg = document.createElementNS(SVGNS, 'svg');
    svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
    svg.setAttribute('width', width);
    svg.setAttribute('height', height);
    container.replaceChildren(svg);
    return { svg, width, height, left: 46, right: width - 10 };
  }

  /** A horizontal band of the chart with its own y scale, grid lines and title. */
  function band(chart, top, height, min, max, title, fmt = (v) => v) {
    const y = (v) => top + height - ((v - min) / (max - min || 1)) * height;
    const g = s(chart.svg, 'g', { class: 'band' });
    for (const t of niceTicks(min, max, height > 90 ? 4 : 3)) {
      s(g, 'line', { x1: chart.left, x2: chart.right, y1: y(t), y2: y(t), class: t === 0 ? 'axis zero' : 'grid' });
      s(g, 'text', { x: chart.left - 4, y: y(t) + 4, class: 'tick', 'text-anchor': 'end' }, fmt(t));
    }
    s(g, 'text', { x: chart.left + 4, y: top - 4, class: 'band-title' }, title);
    return y;
  }

  function timeAxis(chart, x, t0, t1, top, bottom) {
    const g = s(chart.svg, 'g', { class: 'time-axis' });
    for (const tick of timeTicks(t0, t1, chart.right - chart.left)) {
      s(g, 'line', { x1: x(tick.t), x2: x(tick.t), y1: top, y2: bottom, class: tick.midnight ? 'grid midnight' : 'grid' });
      s(g, 'text', { x: x(tick.t), y: bottom + 14, class: 'tick', 'text-anchor': 'middle' }, tick.label);
    }
  }

  /** Path through points, broken where a value is null (a gap in the data). */
  function linePath(points) {
    let d = '';
    let pen = false;
    for (const [px, py] of points) {
      if (py == null || Number.isNaN(py)) { pen = false; continue; }
      d += `${pen ? 'L' : 'M'}${px.toFixed(1)},${py.toFixed(1)}`;
      pen = true;
    }
    return d || 'M0,0';
  }

  /** Step path for values that hold over each interval (prices). */
  function stepPath(x, y, t0, step, values) {
    let d = '';
    values.forEach((v, i) => {
      const a = x(t0 + i * step);
      const b = x(t0 + (i + 1) * step);
      d += `${i ? 'L' : 'M'}${a.toFixed(1)},${y(v).toFixed(1)}H${b.toFixed(1)}`;
    });
    return d || 'M0,0';
  }

  function nowMarker(chart, x, t0, t1, top, bottom) {
    const now = Date.now();
    if (now < t0 || now > t1) return;
    s(chart.svg, 'line', { x1: x(now), x2: x(now), y1: 14, y2: bottom, class: 'now-marker' });
    s(chart.svg, 'text', { x: x(now), y: 11, class: 'now-label', 'text-anchor': 'middle' }, 'now');
  }

  function legend(list, items) {
    list.replaceChildren(...items.map(([cls, label]) => h('li', {}, h('span', { class: `swatch ${cls}` }), label)));
  }

  const carIndex = (id) => Math.max(0, state.vehicles.findIndex((v) => v.id === id));
  const carName = (id) => (state.vehicles.find((v) => v.id === id) || { name: id }).name;
  const range = (values, extra = []) => {
    const nums = values.concat(extra).filter((v) => v != null && Number.isFinite(v));
    return nums.length ? [Math.min(...nums), Math.max(...nums)] : [0, 1];
  };

  // ------------------------------------------------------------------ plan chart

  /** Consecutive steps where no car's planned power changes, merged: one bar each, no stripes. */
  function powerRuns(plan, ids) {
    const t0 = Date.parse(plan.start);
    const step = plan.step_s * 1000;
    const runs = [];
    for (let i = 0; i < plan.steps; i++) {
      const kw = ids.map((id) => (plan.vehicles[id].power_w[i] || 0) / 1000);
      const last = runs[runs.length - 1];
      if (last && last.kw.every((v, k) => v === kw[k])) last.to += step;
      else runs.push({ from: t0 + i * step, to: t0 + (i + 1) * step, kw });
    }
    return runs;
  }

  function renderPlan() {
    const box = $('#plan-chart');
    const plan = state.plan;
    $('#plan-warning').hidden = !(plan && plan.fallback);
    if (!plan) { box.replaceChildren(h('p', { class: 'empty', text: 'No plan yet.' })); return; }
    box.dataset.planCreated = plan.created_at;
    const hours = Math.round((plan.steps * plan.step_s) / 3600);
    $('#plan-meta').textContent = `made ${fmtWhen(plan.created_at)} · ${hours} h · expected cost ${fmtMoney(plan.total_cost)}`;

    const ids = Object.keys(plan.vehicles);
    const chart = newChart(box, 410);
    const t0 = Date.parse(plan.start);
    const step = plan.step_s * 1000;
    const t1 = t0 + plan.steps * step;
    const x = (t) => chart.left + ((t - t0) / (t1 - t0)) * (chart.right - chart.left);
    timeAxis(chart, x, t0, t1, 32, 378); // first: the vertical grid lies under the data

    // Band 1: prices.
    let [pmin, pmax] = range(plan.import_price_per_kwh, plan.export_price_per_kwh);
    pmin = Math.min(0, pmin);
    const yp = band(chart, 32, 80, pmin, pmax * 1.05 || 1, 'price per kWh', (v) => v.toFixed(2));
    s(chart.svg, 'path', { d: stepPath(x, yp, t0, step, plan.import_price_per_kwh), class: 'price-line import' });
    s(chart.svg, 'path', { d: stepPath(x, yp, t0, step, plan.export_price_per_kwh), class: 'price-line export' });

    // Band 2: planned power per car, charge up, discharge down, stacked when cars do the same.
    const runs = powerRuns(plan, ids);
    const sums = runs.flatMap((r) => [r.kw.reduce((a, v) => a + Math.max(0, v), 0), r.kw.reduce((a, v) => a + Math.min(0, v), 0)]);
    const batteries = plan.batteries || {};
    const batteryIds = Object.keys(batteries);
    const batteryKw = batteryIds.flatMap((id) => batteries[id].power_w.map((w) => (w || 0) / 1000));
    const [wmin, wmax] = range(sums.concat(batteryKw), [0, 1]);
    const yw = band(chart, 140, 110, Math.min(0, wmin) * 1.1, wmax * 1.1, 'planned power kW (+ charge, − discharge)', (v) => v);
    const bars = s(chart.svg, 'g', { 'shape-rendering': 'crispEdges' });
    for (const run of runs) {
      let up = 0;
      let down = 0;
      run.kw.forEach((kw, k) => {
        const from = kw >= 0 ? up : down;
        const to = from + kw;
        if (kw >= 0) up = to; else down = to;
        s(bars, 'rect', {
          class: `plan-power car-${carIndex(ids[k]) % 4}${kw < 0 ? ' discharge' : ''}`, 'data-vehicle': ids[k],
          x: x(run.from).toFixed(1), width: Math.max(0.5, x(run.to) - x(run.from)).toFixed(1),
          y: Math.min(yw(from), yw(to)).toFixed(1), height: Math.abs(yw(to) - yw(from)).toFixed(1),
        });
      });
    }

    // The home batteries' planned power: a line over the cars' bars (+ charge, − discharge).
    batteryIds.forEach((id) => {
      s(chart.svg, 'path', { d: stepPath(x, (w) => yw((w || 0) / 1000), t0, step, batteries[id].power_w), class: 'plan-battery', 'data-battery': id });
    });

    // Band 3: SoC trajectory with reserve and target lines and the departure marker.
    const ys = band(chart, 278, 100, 0, 100, 'state of charge %', (v) => v);
    batteryIds.forEach((id) => {
      const pts = batteries[id].soc_percent.map((v, i) => [x(t0 + i * step), ys(v)]);
      s(chart.svg, 'path', { d: linePath(pts), class: 'plan-battery-soc', 'data-battery': id });
    });
    ids.forEach((id) => {
      const pv = plan.vehicles[id];
      const g = s(chart.svg, 'g', { class: `car-${carIndex(id) % 4}` });
      const dep = pv.departure_at ? Date.parse(pv.departure_at) : null;
      s(g, 'line', { x1: chart.left, x2: chart.right, y1: ys(pv.reserve_percent), y2: ys(pv.reserve_percent), class: 'reserve-line' });
      if (pv.target_soc_percent != null) {
        const end = dep && dep < t1 ? x(dep) : chart.right;
        s(g, 'line', { x1: chart.left, x2: end, y1: ys(pv.target_soc_percent), y2: ys(pv.target_soc_percent), class: 'target-line' });
      }
      const pts = pv.soc_percent.map((v, i) => [x(t0 + i * step), ys(v)]);
      s(g, 'path', { d: linePath(pts), class: 'plan-soc', 'data-vehicle': id });
      if (dep && dep >= t0 && dep <= t1) {
        s(g, 'line', { x1: x(dep), x2: x(dep), y1: 140, y2: 378, class: 'departure-marker' });
        const flip = x(dep) > chart.right - 150; // keep the label inside the chart on a phone
        s(g, 'text', {
          x: x(dep) + (flip ? -3 : 3), y: 292 + 12 * ids.indexOf(id), class: 'marker-label', 'text-anchor': flip ? 'end' : 'start',
        }, `${carName(id)} leaves ${fmtClock(dep)}`);
      }
    });

    nowMarker(chart, x, t0, t1, 32, 378);

    legend($('#plan-legend'), [
      ['price import', 'import price'], ['price export', 'export price'],
      ...ids.flatMap((id) => {
        const c = `car-${carIndex(id) % 4}`;
        return [[`${c} bar`, `${carName(id)} power`], [`${c} soc`, `${carName(id)} SoC`]];
      }),
      ...batteryIds.flatMap((id) => {
        const name = (state.batteries.find((b) => b.id === id) || { name: id }).name;
        return [['battery-line', `${name} power`], ['battery-soc', `${name} SoC`]];
      }),
      ['reserve', 'reserve'], ['target', 'target'], ['departure', 'departure'], ['now', 'now'],
    ]);
  }

  // ------------------------------------------------------------------ history chart

  function renderHistory() {
    const box = $('#history-chart');
    const hist = state.history;
    const anyData = hist && Object.values(hist.series).some((values) => values.some((v) => v != null));
    if (!hist || !hist.times.length || !anyData) {
      box.replaceChildren(h('p', { class: 'empty', text: 'No history yet: it fills in as the meters report.' }));
      return;
    }
    const times = hist.times.map((t) => Date.parse(t));
    const t0 = Date.parse(hist.since);
    const t1 = Date.parse(hist.until);
    const ser = hist.series;
    const ids = state.vehicles.map((v) => v.id).filter((id) => `${id}.power_w` in ser || `${id}.soc_percent` in ser);
    const chart = newChart(box, 370);
    const x = (t) => chart.left + ((t - t0) / (t1 - t0)) * (chart.right - chart.left);
    timeAxis(chart, x, t0, t1, 32, 344); // first: the vertical grid lies under the data
    const line = (g, values, y, cls) => s(g, 'path', { d: linePath(times.map((t, i) => [x(t), values[i] == null ? null : y(values[i])])), class: cls });

    // Power band: grid, PV, home and each car, in kW.
    const powerKeys = ['grid_w', 'pv_w', 'home_w', ...ids.map((id) => `${id}.power_w`)].filter((k) => ser[k]);
    const kw = (k) => ser[k].map((w) => (w == null ? null : w / 1000));
    const [lo, hi] = range(powerKeys.flatMap(kw), [0, 1]);
    const yw = band(chart, 32, 150, lo, hi, 'power kW (grid + import, car + charging)', (v) => v);
    const g = s(chart.svg, 'g', {});
    for (const k of ['grid_w', 'pv_w', 'home_w']) if (ser[k]) line(g, kw(k), yw, `series s-${k.slice(0, -2)}`);
    ids.forEach((id) => { if (ser[`${id}.power_w`]) line(s(chart.svg, 'g', { class: `car-${carIndex(id) % 4}` }), kw(`${id}.power_w`), yw, 'series car-power'); });

    // SoC band.
    const ys = band(chart, 208, 70, 0, 100, 'SoC %', (v) => v);
    ids.forEach((id) => { if (ser[`${id}.soc_percent`]) line(s(chart.svg, 'g', { class: `car-${carIndex(id) % 4}` }), ser[`${id}.soc_percent`], ys, 'series soc'); });

    // Price band.
    const priceKeys = ['import_price', 'export_price'].filter((k) => ser[k]);
    if (priceKeys.length) {
      const [plo, phi] = range(priceKeys.flatMap((k) => ser[k]), [0]);
      const yp = band(chart, 304, 40, plo, phi || 1, 'price per kWh', (v) => v.toFixed(2));
      priceKeys.forEach((k) => line(chart.svg, ser[k], yp, `price-line ${k === 'import_price' ? 'import' : 'export'} hist`));
    }

    legend($('#history-legend'), [
      ['s-grid', 'grid'], ['s-pv', 'solar'], ['s-home', 'home'],
      ...ids.map((id) => [`car-${carIndex(id) % 4} soc`, carName(id)]),
      ['price import', 'import price'], ...(ser.export_price ? [['price export', 'export price']] : []),
    ]);
  }

  // ------------------------------------------------------------------ money and events

  function renderMoney() {
    const m = state.money;
    if (!m) return;
    for (const key of ['today', 'month']) {
      const p = m[key];
      const box = $(`[data-money="${key}"]`);
      const rows = [['Cost', p.cost, ''], ['Without control', p.uncontrolled_cost, ''],
        ['Saving', p.saving, p.saving >= 0 ? 'good' : 'bad']];
      const dl = h('dl', {}, ...rows.flatMap(([label, value, cls]) => [h('dt', { text: label }), h('dd', { class: cls, text: fmtMoney(value) })]));
      const missing = p.minutes_missing > 0
        ? h('p', { class: 'note', text: `${fmtAge(p.minutes_missing * 60000)} without data` }) : null;
      box.replaceChildren(...[h('h3', { text: key === 'today' ? 'Today' : 'This month' }), dl, missing].filter(Boolean));
    }
  }

  /** What an event means, in words, for the kinds the daemon stores; else its fields, briefly. */
  const EVENT_TEXT = {
    plug_in: (b) => `${b.vehicle} plugged in at ${b.charger}`,
    unplug: (b) => `${b.vehicle} unplugged from ${b.charger}`,
    command: (b) => `${b.vehicle}: ${String(b.command || '').replace(/([a-z])([A-Z])/g, '$1 $2').toLowerCase()}`,
    signal: (b) => `new ${String(b.signal || '').replace(/_/g, ' ')}`,
    safe_mode: (b) => (b.active ? `entered: ${(b.reasons || []).join('; ')}` : 'left'),
    profile_not_accepted: (b) => `${b.charger} did not take its ${b.purpose}: ${b.reason || b.status}`,
    v2l_cut_off: (b) => `${b.vehicle}: V2L cut off (${b.reason})`,
    grid_state_expired: () => 'outage state expired',
    shutdown: () => 'the controller stopped',
  };

  function eventSummary(kind, body) {
    if (EVENT_TEXT[kind]) return EVENT_TEXT[kind](body);
    if (body.message) return String(body.message);
    return Object.entries(body).slice(0, 4)
      .map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(', ').slice(0, 140);
  }

  function renderEvents() {
    const items = state.events.map((e) => h('li', {},
      h('time', { datetime: e.at, text: fmtWhen(e.at) }), ' ',
      h('strong', { text: e.kind.replace(/_/g, ' ') }), ' ',
      h('span', { class: 'muted', text: eventSummary(e.kind, e.body || {}) })));
    $('#events').replaceChildren(...(items.length ? items : [h('li', { class: 'muted', text: 'Nothing yet.' })]));
  }

  // ------------------------------------------------------------------ live stream

  function setLive(live) {
    state.live = live;
    const el = $('#stream-state');
    el.textContent = live ? 'live' : 'reconnecting';
    el.className = `pill ${live ? 'stream-live' : 'stream-down'}`;
  }

  function openStream() {
    if (state.stream) state.stream.close();
    const es = new EventSource('/api/stream');
    state.stream = es;
    es.addEventListener('now', (ev) => {
      const data = JSON.parse(ev.data);
      state.lastStreamAt = Date.now();
      if (!state.live) setLive(true);
      state.status = data.status; state.flows = data.flows; state.vehicles = data.vehicles;
      state.batteries = data.batteries || [];
      renderStatus(); renderFlows(); renderCars(); renderBatteries();
    });
    es.addEventListener('plan', (ev) => {
      state.plan = JSON.parse(ev.data);
      renderPlan();
      // The re-plan a control asked for has arrived: say so where we said "re-planning…".
      $$('.control-message.ok').forEach((m) => { m.textContent = 'saved — plan updated'; });
    });
    es.addEventListener('error', () => {
      if (state.live) { setLive(false); renderCars(); }
      // The browser retries by itself unless the answer was not a stream (e.g. 401): then we do.
      if (es.readyState === EventSource.CLOSED) {
        setTimeout(() => { if (state.stream === es) checkSessionThenStream(); }, 5000);
      }
    });
  }

  async function checkSessionThenStream() {
    try {
      const session = await api('/api/session');
      if (!session.authenticated) { showLogin(); return; }
    } catch (_) { /* daemon unreachable: keep trying */ }
    openStream();
  }

  /** The stream can stall without an error (a sleeping proxy): notice the silence. */
  function watchdog() {
    if (state.live && Date.now() - state.lastStreamAt > STREAM_SILENT_MS) { setLive(false); renderCars(); }
  }

  // ------------------------------------------------------------------ loading

  function historyPath() {
    const until = new Date();
    const since = new Date(until.getTime() - 864e5);
    return `/api/history?since=${encodeURIComponent(since.toISOString())}&until=${encodeURIComponent(until.toISOString())}&step_s=300`;
  }

  /** Fetch into state.key; a failing part leaves the rest of the page working. */
  async function load(key, path) {
    try { state[key] = await api(path); } catch (e) {
      if (e.status !== 401) notice(`Could not load ${path}: ${e.message}`);
      throw e;
    }
  }

  function notice(text) {
    const el = $('#notice');
    el.textContent = text;
    el.hidden = !text;
  }

  async function loadAll() {
    await Promise.allSettled([
      load('status', '/api/status'), load('flows', '/api/flows'), load('vehicles', '/api/vehicles'),
      load('batteries', '/api/batteries'),
      load('chargers', '/api/chargers'), load('plan', '/api/plan'), load('history', historyPath()),
      load('money', '/api/money'), load('events', '/api/events?limit=20'),
    ]);
    renderAll();
  }

  function renderAll() {
    for (const f of [renderStatus, renderBatteries, renderFlows, renderCars, renderPlan, renderHistory, renderMoney, renderEvents]) {
      try { f(); } catch (e) { console.error(e); } // one broken part must not blank the page
    }
  }

  async function start() {
    $('#app').hidden = false;
    await loadAll();
    document.body.dataset.ready = '1';
    if (state.started) return; // after a re-login the timers and stream already run
    state.started = true;
    openStream();
    setInterval(watchdog, 2000);
    setInterval(() => { load('money', '/api/money').then(renderMoney, () => {}); load('events', '/api/events?limit=20').then(renderEvents, () => {}); }, 60000);
    setInterval(() => { load('history', historyPath()).then(renderHistory, () => {}); load('chargers', '/api/chargers').catch(() => {}); }, 300000);
    setInterval(() => renderPlan(), 60000); // moves the "now" marker
    let resize = 0;
    window.addEventListener('resize', () => {
      clearTimeout(resize);
      resize = setTimeout(() => { renderPlan(); renderHistory(); }, 150);
    });
  }

  async function boot() {
    $('#login-form').addEventListener('submit', onLogin);
    try {
      const session = await api('/api/session');
      state.csrf = session.csrf_token;
      if (session.authenticated) { start(); return; }
      if (session.login_available) { showLogin(); return; }
      notice('This dashboard needs a login, but no password is configured. Use the API token instead.');
    } catch (e) {
      notice(`Cannot reach the controller: ${e.message}`);
      setTimeout(boot, 5000);
    }
  }

  // ------------------------------------------------------------------ api.html: the API overview

  async function apiPage() {
    const intro = $('#api-intro');
    try {
      const res = await fetch('/openapi.json', { credentials: 'same-origin' });
      const doc = await res.json();
      intro.textContent = `${doc.info.title} ${doc.info.version}: ${doc.info.description || ''}`;
      const rows = [];
      for (const [path, ops] of Object.entries(doc.paths)) {
        for (const [method, op] of Object.entries(ops)) {
          if (!['get', 'post', 'put', 'patch', 'delete'].includes(method)) continue;
          rows.push(h('tr', {},
            h('td', {}, h('span', { class: `method m-${method}`, text: method.toUpperCase() })),
            h('td', {}, h('code', { text: path })),
            h('td', { text: op.summary || op.operationId || '' })));
        }
      }
      $('#api-paths tbody').replaceChildren(...rows);
    } catch (e) {
      intro.textContent = `Could not load /openapi.json: ${e.message}`;
    }
  }

  document.addEventListener('DOMContentLoaded', () => {
    if (document.body.dataset.page === 'api') apiPage(); else boot();
  });
})();
