/// The admin listener's status page: one static HTML page with its style and script at routes of
/// their own, so that a strict Content-Security-Policy (no inline script, nothing from elsewhere)
/// holds. The script reads `/status` and `/sessions` every 2 s and closes a session with
/// `DELETE /sessions/ID`, sending the token given in the page address's fragment (`/#token=...`).
enum StatusPage {
    /// Only this listener's own script, style and requests; no frames, forms or base changes.
    static let contentSecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    static let html = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <title>Sallyport status</title>
        <link rel="stylesheet" href="/status.css">
        </head>
        <body>
        <h1>Sallyport</h1>
        <p id="facts"><span id="version"></span><span id="uptime"></span><span id="reload"></span><span id="pam"></span><span id="throttle"></span></p>
        <h2>Sessions by listener and command</h2>
        <table id="counts"><thead><tr><th>listener</th><th>command</th><th>sessions</th></tr></thead><tbody></tbody></table>
        <h2>Live sessions</h2>
        <table id="sessions"><thead><tr><th>id</th><th>client</th><th>user</th><th>command</th><th>destination</th>
        <th>up</th><th>down</th><th>age (s)</th><th></th></tr></thead><tbody></tbody></table>
        <script src="/status.js"></script>
        </body>
        </html>

        """

    static let css = """
        body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; }
        h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
        table { border-collapse: collapse; } td, th { padding: 0.3em 0.8em; border-bottom: 1px solid #ddd; text-align: left; }
        td.n { text-align: right; font-variant-numeric: tabular-nums; }
        #facts span { margin-right: 2em; } button { cursor: pointer; }
        """

    static let script = """
        // The token comes in the address's fragment (#token=...), which no request carries: it is
        // kept for this tab and taken out of the address bar.
        const given = new URLSearchParams(location.hash.slice(1)).get("token");
        if (given) { sessionStorage.setItem("sallyport-token", given); history.replaceState(null, "", location.pathname); }
        const token = sessionStorage.getItem("sallyport-token");
        const options = token ? { headers: { "Authorization": "Bearer " + token } } : {};
        async function get(path) {
          const response = await fetch(path, options);
          if (response.status === 401) {
            document.getElementById("facts").textContent = "This listener asks for its token: open this page as /#token=YOUR_TOKEN.";
            throw new Error("token required");
          }
          return response.json();
        }
        function cell(row, text, numeric) {
          const td = row.insertCell(); td.textContent = text; if (numeric) td.className = "n"; return td;
        }
        async function refresh() {
          const status = await get("/status");
          document.getElementById("version").textContent = "version " + status.version;
          document.getElementById("uptime").textContent = "up " + Math.round(status.uptime_seconds) + " s";
          document.getElementById("reload").textContent = "last reload: " + status.last_reload;
          document.getElementById("pam").textContent = "PAM queue: " + status.pam_queue;
          document.getElementById("throttle").textContent = "throttled clients: " + status.throttled_clients;
          const counts = document.querySelector("#counts tbody"); counts.replaceChildren();
          for (const c of status.sessions) {
            const row = counts.insertRow(); cell(row, c.listener); cell(row, c.command); cell(row, c.sessions, true);
          }
          const sessions = await get("/sessions");
          const body = document.querySelector("#sessions tbody"); body.replaceChildren();
          for (const s of sessions) {
            const row = body.insertRow(); row.id = "session-" + s.id;
            cell(row, s.id); cell(row, s.client); cell(row, s.user ?? "-"); cell(row, s.command ?? "-");
            cell(row, s.destination ?? "-"); cell(row, s.bytes_up, true); cell(row, s.bytes_down, true);
            cell(row, s.age_seconds.toFixed(1), true);
            const button = document.createElement("button"); button.textContent = "close"; button.className = "close";
            button.onclick = async () => { await fetch("/sessions/" + s.id, { ...options, method: "DELETE" }); refresh(); };
            row.insertCell().appendChild(button);
          }
          document.body.dataset.loaded = "yes";
        }
        refresh().catch(() => {}); setInterval(() => refresh().catch(() => {}), 2000);
        """
}
