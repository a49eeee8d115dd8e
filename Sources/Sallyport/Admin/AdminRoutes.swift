import FoundationEssentials
import NIOCore
import NIOHTTP1
import SOCKSProtocol

/// An HTTP request to the admin listener, as the routes need it.
struct AdminRequest: Sendable {
    var method: HTTPMethod
    /// The path without the query.
    var path: String
    var query: [String: String]
    /// `Authorization` header, if any.
    var authorization: String?
    /// The host part of `Host` (without the port), lower case; nil when the request has none.
    var host: String?
    /// The address the admin listener is bound to, as configured.
    var listenerHost: String

    init(head: HTTPRequestHead, listenerHost: String) {
        self.listenerHost = listenerHost
        method = head.method
        let parts = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        path = String(parts.first ?? "/")
        query = [:]
        if parts.count == 2 {
            for pair in parts[1].split(separator: "&") {
                let keyValue = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                query[percentDecoded(keyValue[0])] = keyValue.count == 2 ? percentDecoded(keyValue[1]) : ""
            }
        }
        authorization = head.headers.first(name: "authorization")
        host = head.headers.first(name: "host").map(Self.hostPart)
    }

    /// `[::1]:9180` → `::1`, `Admin.Example:80` → `admin.example`.
    static func hostPart(_ value: String) -> String {
        let text = value.lowercased()
        if text.hasPrefix("["), let end = text.firstIndex(of: "]") { return String(text[text.index(after: text.startIndex)..<end]) }
        if let colon = text.lastIndex(of: ":"), text.firstIndex(of: ":") == colon { return String(text[..<colon]) }
        return text
    }

    /// Whether `Host` names this listener: an IP literal (DNS rebinding needs a name, and a
    /// browser sends the literal it connected to), `localhost`, or a name in `admin.hosts`. A
    /// request without `Host` comes from no browser (they all send one) and passes.
    func hostIsOurs(_ names: [String]) -> Bool {
        guard let host else { return true }
        if host == "localhost" || host == listenerHost.lowercased() || IPAddress(host) != nil { return true }
        return names.contains(host)
    }
}

/// `%XX` escapes and `+` decoded, as a query string writes them; a bad escape stays as it is.
func percentDecoded(_ text: Substring) -> String {
    var bytes: [UInt8] = []
    var rest = Array(text.utf8)[...]
    while let byte = rest.first {
        rest = rest.dropFirst()
        if byte == UInt8(ascii: "+") {
            bytes.append(UInt8(ascii: " "))
        } else if byte == UInt8(ascii: "%"), rest.count >= 2,
            let value = UInt8(String(decoding: rest.prefix(2), as: UTF8.self), radix: 16)
        {
            bytes.append(value)
            rest = rest.dropFirst(2)
        } else {
            bytes.append(byte)
        }
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// What the admin listener answers.
struct AdminResponse: Sendable {
    var status: HTTPResponseStatus
    var contentType: String
    var body: String
    var headers: [(String, String)] = []

    static func text(_ status: HTTPResponseStatus, _ body: String) -> AdminResponse {
        AdminResponse(status: status, contentType: "text/plain; charset=utf-8", body: body + "\n")
    }

    static func json(_ value: some Encodable) -> AdminResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let body = (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "null"
        return AdminResponse(status: .ok, contentType: "application/json", body: body + "\n")
    }
}

/// What the routes ask of the server.
protocol AdminBackend: Sendable {
    /// Listeners bound and configuration loaded (and not shutting down).
    var isReady: Bool { get }
    /// The bearer token requests must carry, as the running configuration says; nil: none.
    var adminToken: String? { get }
    /// The names `Host` may carry besides IP literals and `localhost` (`admin.hosts`).
    var adminHosts: [String] { get }
    func sessions(on eventLoop: any EventLoop) -> EventLoopFuture<[SessionSnapshot]>
    /// Closes a session; false when there is no such session.
    func closeSession(id: String) -> Bool
    /// The Prometheus text exposition of every metric.
    func metricsText(on eventLoop: any EventLoop) -> EventLoopFuture<String>
    /// The PAC file for browsers.
    func pacFile() -> String
    /// Counts and states for the status page.
    func status(on eventLoop: any EventLoop) -> EventLoopFuture<AdminStatus>
    /// Each user's byte totals and quotas.
    func usage(on eventLoop: any EventLoop) -> EventLoopFuture<UsageReport>
    /// Starts a user's day and month again (lifting a quota early); false when there is no such user.
    func resetUsage(user: String) -> Bool
}

/// The routes of the admin listener: a pure mapping from request to response over a backend.
enum AdminRoutes {
    static func respond(to request: AdminRequest, backend: any AdminBackend, on eventLoop: any EventLoop) -> EventLoopFuture<AdminResponse> {
        // A name that is not ours: a page that rebound its name to this address (or a typo).
        guard request.hostIsOurs(backend.adminHosts) else {
            return eventLoop.makeSucceededFuture(
                .text(.misdirectedRequest, "this admin listener does not answer to \(request.host ?? "-"); list the name in admin.hosts to use it"))
        }
        // Public: health checks, the PAC file (every browser fetches it, with no way to send a
        // token) and the status page and its script (static: the data they show comes from
        // routes behind the token). They tell nothing about who uses the proxy.
        if request.method == .GET {
            switch request.path {
            case "/healthz": return eventLoop.makeSucceededFuture(.text(.ok, "ok"))
            case "/readyz":
                return eventLoop.makeSucceededFuture(backend.isReady ? .text(.ok, "ready") : .text(.serviceUnavailable, "not ready"))
            case "/proxy.pac":
                return eventLoop.makeSucceededFuture(
                    AdminResponse(status: .ok, contentType: "application/x-ns-proxy-autoconfig", body: backend.pacFile()))
            case "/":
                var page = AdminResponse(status: .ok, contentType: "text/html; charset=utf-8", body: StatusPage.html)
                page.headers.append(("Content-Security-Policy", StatusPage.contentSecurityPolicy))
                return eventLoop.makeSucceededFuture(page)
            case "/status.css":
                return eventLoop.makeSucceededFuture(AdminResponse(status: .ok, contentType: "text/css; charset=utf-8", body: StatusPage.css))
            case "/status.js":
                return eventLoop.makeSucceededFuture(AdminResponse(status: .ok, contentType: "text/javascript; charset=utf-8", body: StatusPage.script))
            default: break
            }
        }
        if let token = backend.adminToken, !authorized(request, token: token) {
            var response = AdminResponse.text(.unauthorized, "a bearer token is required (Authorization: Bearer TOKEN)")
            response.headers.append(("WWW-Authenticate", "Bearer realm=\"sallyport\""))
            return eventLoop.makeSucceededFuture(response)
        }
        switch (request.method, request.path) {
        case (.GET, "/metrics"):
            return backend.metricsText(on: eventLoop).map {
                AdminResponse(status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: $0)
            }
        case (.GET, "/sessions"):
            return backend.sessions(on: eventLoop).map { .json($0) }
        case (.DELETE, _) where request.path.hasPrefix("/sessions/"):
            let id = String(request.path.dropFirst("/sessions/".count))
            return eventLoop.makeSucceededFuture(
                backend.closeSession(id: id) ? .text(.ok, "closing session \(id)") : .text(.notFound, "no session \(id)"))
        case (.GET, "/status"):
            return backend.status(on: eventLoop).map { .json($0) }
        case (.GET, "/usage"):
            return backend.usage(on: eventLoop).map { .json($0) }
        case (.DELETE, _) where request.path.hasPrefix("/usage/"):
            let user = percentDecoded(request.path.dropFirst("/usage/".count))
            return eventLoop.makeSucceededFuture(
                backend.resetUsage(user: user)
                    ? .text(.ok, "the day and month of \(user) start again") : .text(.notFound, "no usage for \(user)"))
        case (_, "/healthz"), (_, "/readyz"), (_, "/metrics"), (_, "/sessions"), (_, "/proxy.pac"), (_, "/status"), (_, "/usage"), (_, "/"),
            (_, "/status.js"), (_, "/status.css"):
            var response = AdminResponse.text(.methodNotAllowed, "method \(request.method) not allowed here")
            response.headers.append(("Allow", "GET"))
            return eventLoop.makeSucceededFuture(response)
        default:
            return eventLoop.makeSucceededFuture(.text(.notFound, "no such page: \(request.path)"))
        }
    }

    /// `Authorization: Bearer TOKEN`, compared in time that does not depend on where they differ.
    /// Only the header: a token in a URL lands in histories, logs and `Referer`s.
    static func authorized(_ request: AdminRequest, token: String) -> Bool {
        var given: String?
        if let header = request.authorization, header.lowercased().hasPrefix("bearer ") {
            given = String(header.dropFirst("bearer ".count).drop { $0 == " " })
        }
        guard let given else { return false }
        let (a, b) = (Array(given.utf8), Array(token.utf8))
        var difference = UInt8(a.count == b.count ? 0 : 1)
        for index in 0..<min(a.count, b.count) { difference |= a[index] ^ b[index] }
        return difference == 0
    }
}

/// Counts and states the status page shows.
struct AdminStatus: Sendable, Codable {
    struct Count: Sendable, Codable {
        var listener: String
        var command: String
        var sessions: Int
    }

    var version: String
    var uptimeSeconds: Double
    var sessions: [Count]
    var lastReload: String
    var pamQueue: Int
    var throttledClients: Int

    enum CodingKeys: String, CodingKey {
        case version, sessions
        case uptimeSeconds = "uptime_seconds"
        case lastReload = "last_reload"
        case pamQueue = "pam_queue"
        case throttledClients = "throttled_clients"
    }
}
