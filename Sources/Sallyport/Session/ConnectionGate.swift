import Logging
import NIOConcurrencyHelpers
import NIOCore
import SOCKSProtocol

/// Counts the connections each client holds from the moment they are accepted, negotiating ones
/// included (`limits.connections_per_client`): a host that opens hundreds of connections and
/// says nothing would otherwise fill the descriptor table during the negotiation timeout, since
/// session limits count only once a request arrives. A client over the limit has its new
/// connection closed at accept; that is logged at most once per `interval`, with the count.
/// One object lives as long as the server, across reloads.
final class ConnectionGate: Sendable {
    /// What a connection over the limit leads to: nothing more, or a log line to write now.
    enum Admission: Equatable {
        case admitted
        case refused(logLine: (refused: Int, client: ClientNetwork)?)

        static func == (lhs: Admission, rhs: Admission) -> Bool {
            switch (lhs, rhs) {
            case (.admitted, .admitted): return true
            case (.refused(let a), .refused(let b)): return a?.refused == b?.refused && a?.client == b?.client
            default: return false
            }
        }
    }

    private struct State {
        var open: [ClientNetwork: Int] = [:]
        var refusedSinceLine = 0
        var lastLine: NIODeadline?
    }

    private let state = NIOLockedValueBox(State())
    let interval: TimeAmount

    init(interval: TimeAmount = .seconds(10)) {
        self.interval = interval
    }

    /// A connection from `client` was accepted; `limit` 0 admits every one.
    func admit(_ client: ClientNetwork, limit: Int, now: NIODeadline = .now()) -> Admission {
        state.withLockedValue { state in
            let open = state.open[client, default: 0]
            if limit > 0, open >= limit {
                state.refusedSinceLine += 1
                if let last = state.lastLine, now - last < interval { return .refused(logLine: nil) }
                state.lastLine = now
                defer { state.refusedSinceLine = 0 }
                return .refused(logLine: (state.refusedSinceLine, client))
            }
            state.open[client] = open + 1
            return .admitted
        }
    }

    /// An admitted connection closed.
    func leave(_ client: ClientNetwork) {
        state.withLockedValue { state in
            guard let open = state.open[client] else { return }
            state.open[client] = open > 1 ? open - 1 : nil
        }
    }

    /// Clients holding connections now (for tests and the status page).
    var clients: Int { state.withLockedValue { $0.open.count } }
}
