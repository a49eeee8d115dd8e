/// The admin listener's status page: one HTML page, no external assets. It reads `/status` and
/// `/sessions` every 2 s and closes a session with `DELETE /sessions/ID`; a `?token=` in its own
/// address is passed on to those requests.
enum StatusPage {
    static let html = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <title>Sallyport status</title>
        <style>
        body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; }
        h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
        table { border-collapse: collapse; } td, th { padding: 0.3em 0.8em; border-bottom: 1px solid #ddd; text-align: left; }
        td.n { text-align: right; font-variant-numeric: tabular-nums; }
        #facts span { margin-right: 2em; } button { cursor: pointer; }
        </style>
        </head>
        <body>
        <h1>Sallyport</h1>
        <p id="facts"><span id="version"></span><span id="uptime"></span><span id="reload"></span><span id="pam"></span><span id="throttle"></span></p>
        <h2>Sessions by listener and command</h2>
        <table id="counts"><thead><tr><th>listener</th><th>command</th><th>sessions</th></tr></thead><tbody></tbody></table>
        <h2>Live sessions</h2>
        <table id="sessions"><thead><tr><th>id</th><th>client</th><th>user</th><th>command</th><th>destination</th>
        <th>up</th><th>down</th><th>age (s)</th><th></th></tr></thead><tbody></tbody></table>
        <script>
        const token = new URLSearchParams(location.search).get("token");
        const options = token ? { headers: { "Authorization": "Bearer " + token } } : {};
        function cell(row, text, numeric) {
          const td = row.insertCell(); td.textContent = text; if (numeric) td.className = "n"; return td;
        }
        async function refresh() {
          const status = await (await fetch("/status", options)).json();
          document.getElementById("version").textContent = "version " + status.version;
          document.getElementById("uptime").textContent = "up " + Math.round(status.uptime_seconds) + " s";
          document.getElementById("reload").textContent = "last reload: " + status.last_reload;
          document.getElementById("pam").textContent = "PAM queue: " + status.pam_queue;
          document.getElementById("throttle").textContent = "throttled clients: " + status.throttled_clients;
          const counts = document.querySelector("#counts tbody"); counts.replaceChildren();
          for (const c of status.sessions) {
            const row = counts.insertRow(); cell(row, c.listener); cell(row, c.command); cell(row, c.sessions, true);
          }
          const sessions = await (await fetch("/sessions", options)).json();
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
        refresh(); setInterval(refresh, 2000);
        </script>
        </body>
        </html>

        """
}
