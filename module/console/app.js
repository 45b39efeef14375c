// The operator console's page: hash routes #/ (token list) and
// #/token/<label> (one token), over the JSON API under -/api/ (see
// the console contract). Served with a strict CSP: no inline script or
// style, no eval, nothing from another origin. Every piece of data
// (labels, notes, addresses, error messages) reaches the page through
// textContent or an attribute, never as HTML.
'use strict';

(function () {
  const PAGE_SIZE = 50;       // tokens per page of the list
  const SEARCH_DELAY = 250;   // ms of quiet typing before a search runs
  // A token page with a dns: name not resolved yet reads the token again
  // after NAMES_FIRST ms, then every NAMES_EVERY ms, NAMES_TRIES times at
  // most, until every name has been looked up.
  const NAMES_FIRST = 250, NAMES_EVERY = 1000, NAMES_TRIES = 20;
  const ADDRS_SHOWN = 8;      // a name's addresses shown before "N more"

  const main = document.getElementById('app');
  const pageError = document.getElementById('error');
  const whoami = document.getElementById('whoami');

  let me = null;        // GET -/api/me, once at start
  let routeGen = 0;     // bumped on each navigation, to drop stale answers
  let cleanups = [];    // run when leaving a view (timers)

  // ---------- DOM helpers ----------

  // el('button', {id: 'x', class: 'y', type: 'button', onclick: f}, 'text', child…)
  // Strings become text nodes; false/null/undefined props and children are skipped.
  function el(tag, props, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k === 'value') e.value = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (k === 'dataset') Object.assign(e.dataset, v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined || kid === false) continue;
      e.append(kid instanceof Node ? kid : String(kid));
    }
    return e;
  }

  // An inline error line, hidden while empty.
  function errBox(id) {
    return el('p', {id: id, class: 'error', role: 'alert', hidden: true});
  }
  function setErr(box, msg) {
    box.textContent = msg || '';
    box.hidden = !msg;
  }
  // A polite status line (success messages).
  function statusBox(id) {
    return el('p', {id: id, class: 'status', role: 'status'});
  }

  function showPageError(msg) { setErr(pageError, msg); }

  // A labelled field: <div class="field"><label for=id>text</label>control</div>
  function field(text, control, hint) {
    return el('div', {class: 'field'},
      el('label', {for: control.id}, text), control,
      hint ? el('span', {class: 'hint', id: control.id + '-hint'}, hint) : null);
  }

  // A table inside a horizontally scrolling wrapper, so narrow screens
  // scroll the table instead of the page.
  function table(caption, headers, tbody) {
    return el('div', {class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': caption},
      el('table', {},
        el('caption', {class: 'sr-only'}, caption),
        el('thead', {}, el('tr', {}, headers.map(h => el('th', {scope: 'col'}, h)))),
        tbody));
  }

  function emptyRow(cols, text) {
    return el('tr', {class: 'empty'}, el('td', {colspan: cols}, text));
  }

  // "2026-12-02T01:02:03.123Z" → <time> showing "2026-12-02 01:02:03Z",
  // with the local time as a tooltip.
  function timeEl(s) {
    const d = new Date(s);
    if (!s || isNaN(d)) return document.createTextNode(s || '');
    const shown = d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
    return el('time', {datetime: s, title: d.toLocaleString()}, shown);
  }

  // Entries typed one per line or comma separated (or space separated:
  // no entry contains blanks).
  function splitEntries(text) {
    return text.split(/[\s,]+/).filter(Boolean);
  }

  // Ctrl/Cmd+Enter in a textarea submits its form (Enter adds a line).
  function submitOnCtrlEnter(textarea) {
    textarea.addEventListener('keydown', ev => {
      if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey) && textarea.form) {
        ev.preventDefault();
        textarea.form.requestSubmit();
      }
    });
    return textarea;
  }

  // "5m0s" (a Go duration) → "5m"; "1h0m0s" → "1h"; "30s" stays.
  function shortDuration(d) {
    return d.replace(/m0s$/, 'm').replace(/h0m$/, 'h');
  }

  // A name's addresses after a lead ("resolves to "), the first
  // ADDRS_SHOWN of them, and the rest behind "N more".
  function addressList(lead, addrs) {
    const items = list => list.flatMap((a, i) => [i ? ', ' : null, el('span', {class: 'addr mono'}, a)]);
    const line = el('span', {class: 'dns-addresses'}, lead, items(addrs.slice(0, ADDRS_SHOWN)));
    if (addrs.length > ADDRS_SHOWN) {
      line.append(el('details', {}, el('summary', {}, (addrs.length - ADDRS_SHOWN) + ' more'),
        items(addrs.slice(ADDRS_SHOWN))));
    }
    return line;
  }

  // What a dns: entry admits on this node, from its status in the token's
  // `names`; none when the token as in force lists no such name (an entry
  // that expired, say).
  function nameStateEl(st) {
    const box = el('div', {class: 'dns-state', dataset: {state: st ? st.state : 'none'}});
    if (!st) {
      box.append(el('span', {class: 'dns-problem'}, 'not in force on this node'));
      return box;
    }
    if (st.state === 'pending') {
      box.append('not resolved yet');
      return box;
    }
    const addrs = st.addresses || [];
    const kept = addrs.length ? ' — last good addresses keep serving' : ' — it admits no address until it resolves';
    switch (st.state) {
      case 'failing':
        box.append(el('span', {class: 'dns-problem'}, 'lookup failing',
          st.failing_since ? [' since ', timeEl(st.failing_since)] : null,
          st.resolved ? [' (last good answer ', timeEl(st.resolved), ')'] : null,
          ': ' + (st.failing || '') + kept));
        break;
      case 'refused':
        box.append(el('span', {class: 'dns-problem'}, 'refused: ' + (st.refused || '') + kept));
        break;
    }
    // One line: the addresses (or none), then the TTL.
    const line = el('span', {class: 'dns-line'});
    if (addrs.length) line.append(addressList(st.state === 'resolved' ? 'resolves to ' : 'last good addresses: ', addrs));
    else if (st.state === 'empty') line.append('resolves to no address');
    if (st.ttl) {
      // "· TTL 5m" wraps whole, after a space.
      const after = line.childNodes.length > 0;
      if (after) line.append(' ');
      line.append(el('span', {class: 'dns-ttl'}, (after ? '· ' : '') +
        (st.state === 'failing' ? 'tried again after ' : 'TTL ') + shortDuration(st.ttl)));
    }
    box.append(line);
    return box;
  }

  function tokenHref(label) { return '#/token/' + encodeURIComponent(label); }
  function tokenPath(label) { return 'tokens/' + encodeURIComponent(label); }

  // ---------- loading state: <main data-loaded> ----------
  // data-loaded is "false" while any request (or a pending debounced
  // search) is outstanding, and "true" once all have finished and their
  // results are rendered.

  let pending = 0;
  function hold() {
    pending++;
    main.dataset.loaded = 'false';
    let released = false;
    return function release() {
      if (released) return;
      released = true;
      if (--pending === 0) {
        labelCells();
        main.dataset.loaded = 'true';
      }
    };
  }

  // Gives each table cell its column's name (data-th), which narrow
  // screens show in front of the cell when a row is laid out as a card.
  function labelCells() {
    for (const t of main.querySelectorAll('table')) {
      const heads = t.tHead ? Array.from(t.tHead.rows[0].cells, c => c.textContent) : [];
      for (const body of t.tBodies) {
        for (const row of body.rows) {
          Array.from(row.cells).forEach((cell, i) => {
            if (cell.colSpan === 1 && heads[i]) cell.dataset.th = heads[i];
          });
        }
      }
    }
  }
  // track(promise): holds the loading state until promise settles.
  function track(p) {
    const release = hold();
    return p.finally(release);
  }

  // ---------- API ----------

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  // api('me') GETs -/api/me; api('tokens/x/allow', body) POSTs body as JSON.
  // Resolves to the parsed answer; rejects with an ApiError whose message
  // is the server's `error` verbatim when it sent one.
  async function api(path, body) {
    const opts = {credentials: 'same-origin', headers: {'Accept': 'application/json'}};
    if (body !== undefined) {
      opts.method = 'POST';
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch('-/api/' + path, opts);
    } catch (e) {
      throw new ApiError(0, 'Could not reach the server: ' + e.message);
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (_) { /* not JSON: handled below */ }
    }
    if (!res.ok) {
      const msg = data && typeof data.error === 'string' && data.error
        ? data.error : (res.status + ' ' + res.statusText).trim();
      if (res.status === 401) showPageError(msg);
      throw new ApiError(res.status, msg);
    }
    if (data === null || typeof data !== 'object') {
      throw new ApiError(res.status, 'The server answered something that is not JSON.');
    }
    return data;
  }

  // A change started by a button or form: ignores repeats while one is in
  // flight, clears errBox, runs fn (which returns a promise), and shows a
  // failure's message in errBox. A refused change changed nothing, so the
  // page stays as it was.
  function change(btn, box, fn) {
    return function (ev) {
      if (ev) ev.preventDefault();
      if (btn.getAttribute('aria-busy') === 'true') return;
      btn.setAttribute('aria-busy', 'true');
      setErr(box, '');
      // An earlier change's "Added …" or "saved" no longer says what is
      // true now.
      for (const s of main.querySelectorAll('.status')) s.textContent = '';
      track((async () => {
        try {
          await fn();
        } catch (e) {
          setErr(box, e.message);
        } finally {
          btn.removeAttribute('aria-busy');
        }
      })());
    };
  }

  // ---------- small shared pieces ----------

  function stateOf(t) {
    if (t.revoked) return 'revoked';
    if (t.suspended) return 'suspended';
    return 'active';
  }

  // The recent refusals panel: all (label null) or one token's.
  function refusalsPanel(label, gen) {
    const tbody = el('tbody', {id: 'refusals'});
    const box = errBox('refusals-error');
    const refresh = el('button', {type: 'button', id: 'refusals-refresh', class: 'secondary'}, 'Refresh');
    const cols = label === null ? ['Time', 'Token', 'Address', 'Reason'] : ['Time', 'Address', 'Reason'];

    function render(list) {
      tbody.replaceChildren();
      if (!list.length) tbody.append(emptyRow(cols.length, 'No refusals recorded.'));
      for (const r of list) {
        tbody.append(el('tr', {class: 'refusal'},
          el('td', {}, timeEl(r.time)),
          label === null ? el('td', {}, r.label
            ? el('a', {href: tokenHref(r.label)}, r.label)
            : el('span', {class: 'muted'}, r.reason === 'missing_token' ? '(no token)' : '(unlisted)')) : null,
          el('td', {class: 'mono'}, r.ip),
          el('td', {}, r.reason)));
      }
    }
    async function load() {
      try {
        const q = label === null ? '' : '?label=' + encodeURIComponent(label);
        const data = await api('refusals' + q);
        if (gen !== routeGen) return;
        render(data.refusals || []);
        setErr(box, '');
      } catch (e) {
        if (gen === routeGen) setErr(box, e.message);
      }
    }
    refresh.addEventListener('click', () => track(load()));
    const node = el('section', {'aria-labelledby': 'refusals-h'},
      el('div', {class: 'section-head'},
        el('h2', {id: 'refusals-h'}, label === null ? 'Recent refusals' : 'Recent refusals of this token'),
        refresh),
      box,
      table('Recent refusals', cols, tbody));
    return {node, load};
  }

  // ---------- #/ : the token list ----------

  function listView(gen) {
    const st = {prefix: '', after: '', back: [], next: ''}; // back: the `after`s of earlier pages
    let seq = 0; // drops answers to superseded searches

    const search = el('input', {id: 'search', type: 'search', autocomplete: 'off',
      spellcheck: 'false', placeholder: 'label prefix'});
    const tbody = el('tbody', {id: 'token-list'});
    const prev = el('button', {type: 'button', id: 'prev-page', class: 'secondary', disabled: true}, 'Previous page');
    const next = el('button', {type: 'button', id: 'next-page', class: 'secondary', disabled: true}, 'Next page');
    const pageInfo = el('span', {id: 'page-info', class: 'muted'});
    const listErr = errBox('list-error');

    function renderRows(tokens) {
      tbody.replaceChildren();
      if (!tokens.length) tbody.append(emptyRow(5, st.prefix ? 'No token starts with that.' : 'No tokens yet.'));
      for (const t of tokens) {
        const config = t.source === 'config';
        tbody.append(el('tr', {dataset: {label: t.label, source: t.source || ''}},
          el('td', {}, el('a', {href: tokenHref(t.label), class: 'token-link'}, t.label)),
          el('td', {}, t.source || '',
            config && t.where ? el('span', {class: 'where'}, t.where) : null),
          el('td', {}, t.owner || ''),
          el('td', {class: 'num'}, config && !t.allow ? '' : String(t.allow || 0)),
          el('td', {}, el('span', {class: 'state state-' + stateOf(t)}, stateOf(t)),
            t.mode ? el('span', {class: 'mode'}, 'mode ' + t.mode) : null)));
      }
    }

    let loading = false; // a page is being fetched: paging clicks wait for it
    async function load() {
      const my = ++seq;
      loading = true;
      const q = new URLSearchParams({limit: String(PAGE_SIZE)});
      if (st.prefix) q.set('prefix', st.prefix);
      if (st.after) q.set('after', st.after);
      try {
        const data = await api('tokens?' + q.toString());
        if (my !== seq || gen !== routeGen) return;
        renderRows(data.tokens || []);
        st.next = data.next || '';
        prev.disabled = st.back.length === 0;
        next.disabled = !st.next;
        pageInfo.textContent = 'Page ' + (st.back.length + 1);
        setErr(listErr, '');
      } catch (e) {
        if (my === seq && gen === routeGen) setErr(listErr, e.message);
      } finally {
        if (my === seq) loading = false;
      }
    }

    // Search as you type, after SEARCH_DELAY ms of quiet. The loading
    // state is held from the first keystroke, so a test that types and
    // then waits for data-loaded sees the new results.
    let timer = null, release = null;
    search.addEventListener('input', () => {
      if (timer) clearTimeout(timer); else release = hold();
      timer = setTimeout(() => {
        const r = release;
        timer = null; release = null;
        st.prefix = search.value.trim();
        st.after = ''; st.back = [];
        load().finally(r);
      }, SEARCH_DELAY);
    });
    cleanups.push(() => { if (timer) { clearTimeout(timer); release(); } });

    next.addEventListener('click', () => {
      if (loading || !st.next) return;
      st.back.push(st.after);
      st.after = st.next;
      track(load());
    });
    prev.addEventListener('click', () => {
      if (loading || !st.back.length) return;
      st.after = st.back.pop();
      track(load());
    });

    const refusals = refusalsPanel(null, gen);

    main.append(
      el('h1', {tabindex: '-1'}, 'Tokens'),
      el('section', {'aria-labelledby': 'list-h'},
        el('h2', {id: 'list-h', class: 'sr-only'}, 'Token list'),
        el('form', {role: 'search', class: 'inline-form', onsubmit: ev => ev.preventDefault()},
          field('Search by label', search)),
        listErr,
        table('Tokens', ['Label', 'Source', 'Owner', 'Entries', 'State'], tbody),
        el('div', {class: 'pager'}, prev, pageInfo, next)),
      newTokenForm(gen, () => track(load())),
      refusals.node);

    return Promise.all([load(), refusals.load()]);
  }

  // The "New token" form; onCreated reloads the list.
  function newTokenForm(gen, onCreated) {
    const label = el('input', {id: 'new-label', required: true, autocomplete: 'off', spellcheck: 'false'});
    const allow = submitOnCtrlEnter(el('textarea', {id: 'new-allow', rows: '3', spellcheck: 'false',
      'aria-describedby': 'new-allow-hint'}));
    const note = el('input', {id: 'new-note', autocomplete: 'off'});
    const owner = me.operator ? el('input', {id: 'new-owner', autocomplete: 'off', spellcheck: 'false'}) : null;
    const create = el('button', {type: 'submit', id: 'new-create'}, 'Create token');
    const box = errBox('new-error');
    const result = el('div', {id: 'new-result', class: 'secret-box', hidden: true});

    // Shows the secret once: a readonly input to select, and a Copy button.
    function showSecret(token, entry) {
      const secret = el('input', {id: 'new-secret', readonly: true, value: token,
        autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'new-secret-hint'});
      const copied = statusBox('new-copy-status');
      const copy = el('button', {type: 'button', id: 'new-copy'}, 'Copy');
      copy.addEventListener('click', async () => {
        secret.focus();
        secret.select();
        try {
          await navigator.clipboard.writeText(token);
          copied.textContent = 'Copied.';
        } catch (_) {
          copied.textContent = 'Could not copy here: the token is selected, press Ctrl+C.';
        }
      });
      secret.addEventListener('focus', () => secret.select());
      result.replaceChildren(
        el('h3', {}, 'Token ', el('span', {class: 'mono'}, entry.label), ' created'),
        el('p', {id: 'new-secret-hint', class: 'warn'},
          'This is the only time the token is shown. Store it now: it cannot be retrieved again.'),
        el('div', {class: 'row'}, field('Token', secret), copy),
        copied,
        el('p', {}, el('a', {id: 'new-open', href: tokenHref(entry.label)}, 'Open ' + entry.label)));
      result.hidden = false;
      secret.focus();
    }

    const form = el('form', {id: 'new-form', autocomplete: 'off'},
      field('Label', label),
      field('Allow entries', allow, 'Addresses, CIDR ranges or dns: names (dns:office.example.com), one per line or comma separated.'),
      field('Note', note),
      owner ? field('Owner', owner) : null,
      el('div', {class: 'actions'}, create),
      box);
    form.addEventListener('submit', change(create, box, async () => {
      const body = {label: label.value.trim(), allow: splitEntries(allow.value), note: note.value};
      if (owner) body.owner = owner.value.trim();
      // A failure keeps the last secret shown: it may not be stored yet.
      const data = await api('tokens', body);
      if (gen !== routeGen) return;
      label.value = ''; allow.value = ''; note.value = '';
      if (owner) owner.value = '';
      showSecret(data.token, data.entry || {label: body.label});
      onCreated();
    }));

    return el('section', {'aria-labelledby': 'new-h'},
      el('h2', {id: 'new-h'}, 'New token'), form, result);
  }

  // ---------- #/token/<label> ----------

  async function tokenView(label, gen) {
    const path = tokenPath(label);
    let entry, observed = null;
    let obsTbody, obsErr, obsStatus; // the observed section's parts

    const h1 = el('h1', {tabindex: '-1', id: 'token-label'}, label);
    main.append(el('p', {class: 'crumb'}, el('a', {href: '#/', id: 'back'}, '← All tokens')), h1);

    const refusals = refusalsPanel(label, gen);
    try {
      entry = await api(path);
    } catch (e) {
      if (gen === routeGen) {
        showPageError(e.message);
        if (e.status === 404) {
          main.append(el('p', {id: 'not-found', class: 'muted'},
            'There is no token with this label, or it is not one of yours.'));
        }
      }
      return;
    }
    if (gen !== routeGen) return;
    const config = entry.source === 'config';

    // --- summary and state ---
    const stateEl = el('span', {id: 'state'});
    const modeEl = el('span', {id: 'mode', class: 'mode'});
    const summary = el('dl', {class: 'summary', id: 'summary'});
    const suspendBtn = el('button', {type: 'button', id: 'suspend', class: 'secondary', hidden: true}, 'Suspend');
    const resumeBtn = el('button', {type: 'button', id: 'resume', class: 'secondary', hidden: true}, 'Resume');
    const stateErr = errBox('state-error');
    // The latest leak_alert alert, from the entry's leak_alert.
    const leakBox = el('p', {id: 'leak-alert', class: 'warn', role: 'status', hidden: true});

    // --- entries ---
    const entriesBody = el('tbody', {id: 'entries'});
    const entriesErr = errBox('entries-error');
    const denyWrap = el('div', {id: 'deny-wrap', hidden: true});

    // --- owner (operators, store tokens) ---
    const ownerInput = el('input', {id: 'owner', autocomplete: 'off', spellcheck: 'false'});
    const ownerSave = el('button', {type: 'submit', id: 'owner-save'}, 'Save owner');
    const ownerErr = errBox('owner-error');
    const ownerStatus = statusBox('owner-status');

    // Renders everything that comes from the entry; called with the
    // entry each change answers.
    function renderEntry(e) {
      // A change answers the entry without its alert: keep the one shown.
      if (!e.leak_alert && entry && entry.leak_alert) e.leak_alert = entry.leak_alert;
      entry = e;
      const leak = e.leak_alert;
      leakBox.hidden = !leak;
      if (leak) {
        leakBox.replaceChildren('May be leaked: refused from ' + leak.distinct_addresses +
          ' distinct addresses outside its list within ' + leak.window + ' (' + leak.refusals +
          ' refusals), at ', timeEl(leak.time), '. Among them: ' + (leak.addresses || []).join(', ') + '.' +
          (leak.suspended ? ' leak_alert suspended it; Resume undoes that.' : ''));
      }
      const state = stateOf(e);
      stateEl.textContent = state;
      stateEl.className = 'state state-' + state;
      modeEl.textContent = e.mode ? 'mode ' + e.mode : '';
      suspendBtn.hidden = config || !!e.suspended;
      resumeBtn.hidden = config || !e.suspended;

      summary.replaceChildren();
      const row = (k, v) => summary.append(el('dt', {}, k), el('dd', {}, v));
      row('Source', e.source || '');
      if (config) row('Defined in', el('span', {id: 'where'}, e.where || 'the configuration'));
      if (!config) row('Owner', el('span', {id: 'owner-shown'}, e.owner || '—'));
      if (e.note) row('Note', e.note);
      if (e.rev !== undefined) row('Revision', String(e.rev));
      if (!config && document.activeElement !== ownerInput) ownerInput.value = e.owner || '';

      const allow = e.allow || [];
      const notes = e.notes || {}, expires = e.expires || {};
      const cols = config ? 3 : 4;
      // A tokens file's token: its entries are not shown, but what its
      // dns: names admit is.
      const unlisted = (e.names || []).map(n => 'dns:' + n.name).filter(a => !allow.includes(a));
      entriesBody.replaceChildren();
      if (!allow.length) {
        entriesBody.append(emptyRow(cols, config && !e.allow
          ? 'Its ' + (unlisted.length ? 'other ' : '') + 'entries are in its tokens file; the console does not show them.'
          : 'No allow entries.'));
      }
      for (const a of allow) {
        const exp = expires[a];
        const expired = exp && new Date(exp) < new Date();
        entriesBody.append(el('tr', {dataset: {entry: a}},
          entryCell(a),
          el('td', {class: 'note'}, notes[a] || ''),
          el('td', {class: expired ? 'expired' : ''}, exp ? timeEl(exp) : 'never', expired ? ' (expired)' : ''),
          config ? null : el('td', {}, el('button', {type: 'button', class: 'remove danger',
            'aria-label': 'Remove ' + a, onclick: removeEntry(a)}, 'Remove'))));
      }
      for (const a of unlisted) {
        entriesBody.append(el('tr', {dataset: {entry: a}},
          entryCell(a), el('td', {class: 'note'}), el('td', {}), config ? null : el('td', {})));
      }
      namesTries = 0;
      renderNames();
      const deny = e.deny || [];
      denyWrap.hidden = !deny.length;
      denyWrap.replaceChildren(el('h3', {}, 'Deny entries'),
        el('ul', {id: 'deny', class: 'mono'}, deny.map(d => el('li', {}, d))));
      if (observed) renderObserved();
    }

    // An entry's cell; a dns: entry's holds its state, which renderNames
    // fills.
    function entryCell(a) {
      return el('td', {class: 'mono'}, a, a.startsWith('dns:') ? el('div', {class: 'dns-state'}) : null);
    }

    // Shows each dns: entry's state from entry.names, and reads the token
    // again while a name is not resolved yet.
    let namesTimer = null, namesTries = 0;
    cleanups.push(() => clearTimeout(namesTimer));
    function renderNames() {
      const byName = new Map((entry.names || []).map(n => [n.name, n]));
      for (const box of entriesBody.querySelectorAll('.dns-state')) {
        box.replaceWith(nameStateEl(byName.get(box.closest('tr').dataset.entry.slice('dns:'.length))));
      }
      clearTimeout(namesTimer);
      namesTimer = null;
      if (namesTries < NAMES_TRIES && (entry.names || []).some(n => n.state === 'pending')) {
        namesTimer = setTimeout(() => track(rereadNames()), namesTries++ ? NAMES_EVERY : NAMES_FIRST);
      }
    }
    async function rereadNames() {
      namesTimer = null;
      try {
        const e = await api(path);
        if (gen !== routeGen) return;
        entry.names = e.names;
        renderNames();
      } catch (_) {
        // Not read again: the next change, or opening the page again,
        // shows the names as they are then.
      }
    }

    function removeEntry(a) {
      return ev => change(ev.currentTarget, entriesErr, async () => {
        const e = await api(path + '/remove', {entry: a});
        renderEntry(e);
        // Keep the keyboard where it was: the next Remove, or the Add form.
        const nextBtn = entriesBody.querySelector('button.remove');
        (nextBtn || document.getElementById('add-entries') || h1).focus();
      })();
    }

    suspendBtn.addEventListener('click', change(suspendBtn, stateErr, async () => {
      renderEntry(await api(path + '/suspend', {}));
      resumeBtn.focus();
    }));
    resumeBtn.addEventListener('click', change(resumeBtn, stateErr, async () => {
      renderEntry(await api(path + '/resume', {}));
      suspendBtn.focus();
    }));

    const sections = [];
    sections.push(el('section', {'aria-labelledby': 'about-h'},
      el('h2', {id: 'about-h', class: 'sr-only'}, 'About this token'),
      el('p', {class: 'state-line'}, 'State: ', stateEl, ' ', modeEl),
      leakBox,
      config ? el('p', {class: 'muted', id: 'read-only'},
        'Defined in the configuration: read-only here. Change it where it is defined.') : null,
      summary,
      config ? null : el('div', {class: 'actions'}, suspendBtn, resumeBtn),
      stateErr));

    if (!config && me.operator) {
      const form = el('form', {id: 'owner-form', class: 'inline-form'},
        field('Owner\u2019s user id', ownerInput), ownerSave);
      form.addEventListener('submit', change(ownerSave, ownerErr, async () => {
        ownerStatus.textContent = '';
        renderEntry(await api(path + '/owner', {owner: ownerInput.value.trim()}));
        ownerInput.value = entry.owner || '';
        ownerStatus.textContent = 'Owner saved.';
      }));
      sections.push(el('section', {'aria-labelledby': 'owner-h'},
        el('h2', {id: 'owner-h'}, 'Change the owner'), form, ownerErr, ownerStatus));
    }

    sections.push(el('section', {'aria-labelledby': 'entries-h'},
      el('h2', {id: 'entries-h'}, 'Allow entries'),
      entriesErr,
      table('Allow entries', config ? ['Entry', 'Note', 'Expires'] : ['Entry', 'Note', 'Expires', ''], entriesBody),
      denyWrap));

    if (!config) sections.push(addSection(), myIpSection());
    sections.push(checkSection());
    const obs = observedSection();
    sections.push(obs.node, refusals.node);
    main.append(...sections);
    renderEntry(entry);

    // The Add form: entries, note, optional ttl.
    function addSection() {
      const entries = submitOnCtrlEnter(el('textarea', {id: 'add-entries', rows: '3', spellcheck: 'false',
        'aria-describedby': 'add-entries-hint'}));
      const note = el('input', {id: 'add-note', autocomplete: 'off'});
      const ttl = el('input', {id: 'add-ttl', autocomplete: 'off', spellcheck: 'false',
        placeholder: 'e.g. 24h or 7d', 'aria-describedby': 'add-ttl-hint'});
      const submit = el('button', {type: 'submit', id: 'add-submit'}, 'Add');
      const box = errBox('add-error');
      const done = statusBox('add-status');
      const form = el('form', {id: 'add-form'},
        field('Entries', entries, 'Addresses, CIDR ranges or dns: names (dns:office.example.com), one per line or comma separated. Ctrl+Enter adds.'),
        el('div', {class: 'row'},
          field('Note', note),
          field('Expires after', ttl, 'Optional; empty: never.')),
        el('div', {class: 'actions'}, submit), box, done);
      form.addEventListener('submit', change(submit, box, async () => {
        done.textContent = '';
        const list = splitEntries(entries.value);
        if (!list.length) throw new Error('Type at least one address, range or name.');
        const body = {entries: list};
        if (note.value.trim()) body.note = note.value.trim();
        if (ttl.value.trim()) body.ttl = ttl.value.trim();
        renderEntry(await api(path + '/allow', body));
        entries.value = ''; note.value = ''; ttl.value = '';
        done.textContent = 'Added ' + list.join(', ') + '.';
      }));
      return el('section', {'aria-labelledby': 'add-h'}, el('h2', {id: 'add-h'}, 'Add entries'), form);
    }

    // "Add my IP": asks the server for this request's address, shows it,
    // and adds it only when confirmed.
    function myIpSection() {
      const start = el('button', {type: 'button', id: 'add-my-ip', class: 'secondary'}, 'Add my IP…');
      const ipEl = el('span', {id: 'my-ip', class: 'mono'});
      const confirm = el('button', {type: 'button', id: 'add-my-ip-confirm'}, 'Add it');
      const cancel = el('button', {type: 'button', id: 'add-my-ip-cancel', class: 'secondary'}, 'Cancel');
      const box = errBox('add-my-ip-error');
      const done = statusBox('add-my-ip-status');
      const ask = el('div', {id: 'my-ip-box', class: 'confirm', hidden: true},
        el('p', {}, 'Your address is ', ipEl, ' — add it?'),
        el('div', {class: 'actions'}, confirm, cancel));
      start.addEventListener('click', change(start, box, async () => {
        done.textContent = '';
        const m = await api('me');
        if (!m.client_ip) throw new Error('The server did not say which address this request came from.');
        ipEl.textContent = m.client_ip;
        ask.hidden = false;
        confirm.focus();
      }));
      cancel.addEventListener('click', () => { ask.hidden = true; start.focus(); });
      confirm.addEventListener('click', change(confirm, box, async () => {
        const ip = ipEl.textContent;
        renderEntry(await api(path + '/allow', {entries: [ip]}));
        ask.hidden = true;
        done.textContent = 'Added ' + ip + '.';
        start.focus();
      }));
      return el('section', {'aria-labelledby': 'myip-h'},
        el('h2', {id: 'myip-h'}, 'Your address'), start, ask, box, done);
    }

    // The decision tester: address → decision and reason.
    function checkSection() {
      const ip = el('input', {id: 'check-ip', autocomplete: 'off', spellcheck: 'false', required: true,
        placeholder: '203.0.113.9'});
      const submit = el('button', {type: 'submit', id: 'check-submit'}, 'Check');
      const result = el('p', {id: 'check-result', class: 'check-result', role: 'status'});
      const box = errBox('check-error');
      const form = el('form', {id: 'check-form', class: 'inline-form'}, field('Address', ip), submit);
      form.addEventListener('submit', change(submit, box, async () => {
        result.textContent = '';
        delete result.dataset.decision;
        delete result.dataset.dnsName;
        const r = await api(path + '/check?ip=' + encodeURIComponent(ip.value.trim()));
        result.dataset.decision = r.decision;
        if (r.dns_name) result.dataset.dnsName = r.dns_name;
        result.append(el('strong', {class: 'decision-' + r.decision}, r.decision),
          ' — ' + (r.reason || ''), r.dns_name ? ' by dns:' + r.dns_name : '',
          r.mode ? ' (mode ' + r.mode + ')' : '');
      }));
      return el('section', {'aria-labelledby': 'check-h'},
        el('h2', {id: 'check-h'}, 'Test an address'), form, box, result);
    }

    // Observed addresses, with Add per row and Add all seen ≥ n times.
    // Rows the token refused need an in-page confirmation; Add all never
    // includes them.
    function observedSection() {
      obsTbody = el('tbody', {id: 'observed'});
      obsErr = errBox('observed-error');
      obsStatus = statusBox('observed-status');
      const refresh = el('button', {type: 'button', id: 'observed-refresh', class: 'secondary'}, 'Refresh');
      refresh.addEventListener('click', () => track(loadObserved()));
      const cols = ['Address', 'Status', 'Allowed', 'Denied', 'Would deny', 'Last seen'];
      if (!config) cols.push('');
      let addAll = null;
      if (!config) {
        const n = el('input', {id: 'add-all-n', type: 'number', min: '1', step: '1', value: '1', inputmode: 'numeric'});
        const btn = el('button', {type: 'submit', id: 'add-all'}, 'Add all');
        // Reads as a sentence: "Add every address not refused, seen at least [n] times [Add all]".
        addAll = el('form', {id: 'add-all-form', class: 'sentence-form'},
          el('label', {for: 'add-all-n'}, 'Add every address not refused, seen at least'),
          el('span', {class: 'nowrap'}, n, ' times'), btn);
        addAll.addEventListener('submit', change(btn, obsErr, async () => {
          obsStatus.textContent = '';
          const min = Number(n.value);
          if (!Number.isInteger(min) || min < 1) throw new Error('Give a whole number of times, 1 or more.');
          const listed = new Set(entry.allow || []);
          const ips = (observed || [])
            .filter(a => a.status !== 'refused' && (a.allowed || 0) + (a.would_deny || 0) >= min)
            .map(a => a.ip)
            .filter(ip => !listed.has(ip)); // already listed as such: nothing to add
          if (!ips.length) { obsStatus.textContent = 'Nothing to add.'; return; }
          renderEntry(await api(path + '/allow', {entries: ips}));
          obsStatus.textContent = 'Added ' + ips.join(', ') + '.';
        }));
      }
      const node = el('section', {'aria-labelledby': 'observed-h'},
        el('div', {class: 'section-head'}, el('h2', {id: 'observed-h'}, 'Observed addresses'), refresh),
        obsErr, obsStatus,
        table('Observed addresses', cols, obsTbody),
        addAll);
      return {node, cols: cols.length};
    }

    function renderObserved() {
      const listed = new Set(entry.allow || []);
      obsTbody.replaceChildren();
      if (!observed.length) obsTbody.append(emptyRow(obs.cols, 'No addresses seen yet.'));
      for (const a of observed) {
        const tr = el('tr', {dataset: {ip: a.ip, status: a.status}},
          el('td', {class: 'mono'}, a.ip, listed.has(a.ip) ? el('span', {class: 'listed'}, 'listed') : null),
          el('td', {}, el('span', {class: 'status-' + a.status}, a.status)),
          el('td', {class: 'num'}, String(a.allowed || 0)),
          el('td', {class: 'num'}, String(a.denied || 0)),
          el('td', {class: 'num'}, String(a.would_deny || 0)),
          el('td', {}, timeEl(a.last_seen)));
        if (!config && listed.has(a.ip)) {
          tr.append(el('td', {}));
        } else if (!config) {
          const add = el('button', {type: 'button', class: 'add', 'aria-label': 'Add ' + a.ip}, 'Add');
          add.addEventListener('click', () => {
            if (a.status === 'refused') askRefused(tr, a.ip, add);
            else addObserved(add, a.ip)();
          });
          tr.append(el('td', {}, add));
        }
        obsTbody.append(tr);
      }
    }

    function addObserved(btn, ip) {
      return change(btn, obsErr, async () => {
        obsStatus.textContent = '';
        renderEntry(await api(path + '/allow', {entries: [ip]}));
        obsStatus.textContent = 'Added ' + ip + '.';
        // The row was re-rendered: put the keyboard back on its Add.
        const again = obsTbody.querySelector('tr[data-ip="' + CSS.escape(ip) + '"] button.add');
        if (again) again.focus();
      });
    }

    // The in-page confirmation under a refused row.
    function askRefused(tr, ip, addBtn) {
      for (const old of obsTbody.querySelectorAll('tr.confirm')) old.remove();
      const yes = el('button', {type: 'button', class: 'add-confirm danger'}, 'Add anyway');
      const no = el('button', {type: 'button', class: 'add-cancel secondary'}, 'Cancel');
      const row = el('tr', {class: 'confirm', dataset: {confirmIp: ip}},
        // .confirm-inner sticks to the left of the scrolling wrapper, so
        // the question stays readable on a narrow screen.
        el('td', {colspan: obs.cols}, el('div', {class: 'confirm-inner'},
          el('p', {class: 'warn', role: 'alert'},
            'This address was refused: an attacker\u2019s address looks the same. Add ' + ip + ' anyway?'),
          el('div', {class: 'actions'}, yes, no))));
      no.addEventListener('click', () => { row.remove(); addBtn.focus(); });
      yes.addEventListener('click', addObserved(yes, ip));
      tr.after(row);
      no.focus();
    }

    async function loadObserved() {
      try {
        const d = await api(path + '/observed');
        if (gen !== routeGen) return;
        setErr(obsErr, '');
        observed = d.addresses || [];
        renderObserved();
      } catch (e) {
        if (gen === routeGen) setErr(obsErr, e.message);
      }
    }

    await Promise.all([loadObserved(), refusals.load()]);
  }

  // ---------- router ----------

  function route(focus) {
    const gen = ++routeGen;
    for (const f of cleanups) f();
    cleanups = [];
    setErr(pageError, '');
    main.replaceChildren();
    const m = /^#\/token\/(.+)$/.exec(location.hash);
    let label = null;
    if (m) {
      try { label = decodeURIComponent(m[1]); } catch (_) { label = null; }
    }
    const p = label !== null ? tokenView(label, gen) : listView(gen);
    return track(p.catch(e => { if (gen === routeGen) showPageError(e.message); }))
      .then(() => {
        if (focus && gen === routeGen) {
          const h = main.querySelector('h1');
          if (h) h.focus();
        }
      });
  }

  async function start() {
    try {
      me = await api('me');
    } catch (e) {
      main.replaceChildren(el('p', {class: 'muted', id: 'not-started'},
        e.status === 401 ? 'Not logged in: the console cannot start.' : 'The console cannot start.'));
      if (e.status !== 401) showPageError(e.message);
      return;
    }
    // bounded: held to the owner bounds; an operator is so only when the
    // console names no operators.
    const role = me.operator ? (me.bounded ? ' · operator within the owner bounds' : ' · operator') : '';
    whoami.textContent = (me.user || '?') + role + (me.store ? ' · store ' + me.store : '');
    window.addEventListener('hashchange', () => route(true));
    route(false);
  }

  track(start());
})();
