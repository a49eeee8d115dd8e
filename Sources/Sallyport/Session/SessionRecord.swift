import Logging
import NIOCore
import SOCKSProtocol
import SallyportRelay

/// What the access log says of a session: filled in as the session goes, written once at its end.
struct SessionRecord {
    let id: UInt64
    let listener: String
    let start = NIODeadline.now()
    var client: SocketAddress?
    var user: String?
    var command: SOCKSCommand?
    var destination: SOCKSEndpoint?
    var remote: SocketAddress?
    /// The rule that allowed the destination (a refusal's rule comes with the `SessionEnd`).
    var rule: String?
    /// The reply code sent, as the negotiation's action named it.
    var reply: SOCKSReplyCode?
    var counters = RelayCounters()
    var udp: UDPCounters?
    /// What few sessions have (SOCKS4, an upstream): one reference here rather than their room in
    /// every session.
    var notes: SessionNotes?

    init(id: UInt64, listener: String) {
        self.id = id
        self.listener = listener
    }

    var idText: String { String(id, radix: 16) }

    /// A user id as the log shows it: UTF-8 with control characters as `?`.
    static func printable(_ bytes: [UInt8]) -> String {
        String(decoding: bytes.map { $0 < 0x20 || $0 == 0x7F ? UInt8(ascii: "?") : $0 }, as: UTF8.self)
    }
    var clientText: String { client?.endpointText ?? "-" }

    /// What the admin listener shows of the session, with the bytes relayed so far.
    func snapshot(bytes: RelayCounters) -> SessionSnapshot {
        SessionSnapshot(
            id: idText, listener: listener, client: clientText, user: user, command: command?.description,
            destination: destination?.description, bytesUp: bytes.clientToTarget, bytesDown: bytes.targetToClient,
            ageSeconds: Double((NIODeadline.now() - start).nanoseconds) / 1e9)
    }

    /// The fields that name the session in the server log's lines about it, with `extra`.
    func logFields(_ extra: Logger.Metadata = [:]) -> Logger.Metadata {
        var metadata: Logger.Metadata = ["session": .string(idText), "user": .string(user ?? "-"), "client": .string(clientText)]
        metadata.merge(extra) { $1 }
        return metadata
    }

    /// The access log's fields, in the order every line writes them (both formats).
    static let fieldOrder = [
        "session", "listener", "client", "user", "cmd", "dst", "remote", "rule", "reply", "up", "down",
        "dgrams_up", "dgrams_down", "destinations", "denied", "dropped", "duration", "end",
    ]

    /// The access-log line's fields (`fieldOrder` puts them in order; `socks4_user` and `via`,
    /// which few sessions have, follow sorted).
    func metadata(end: SessionEnd) -> Logger.Metadata {
        let elapsed = NIODeadline.now() - start
        let seconds = Double(elapsed.nanoseconds) / 1e9
        var metadata = Logger.Metadata(minimumCapacity: udp == nil ? 13 : 18)
        metadata["session"] = .string(idText)
        metadata["listener"] = .string(listener)
        metadata["client"] = .string(clientText)
        metadata["user"] = .string(user ?? "-")
        metadata["cmd"] = .string(command?.description ?? "-")
        metadata["dst"] = .string(destination?.description ?? "-")
        metadata["remote"] = .string(remote?.endpointText ?? "-")
        metadata["rule"] = .string(end.rule?.description ?? rule ?? "-")
        // Numbers as numbers: the JSON format writes them unquoted, and only them.
        if let socks4UserID = notes?.socks4UserID {
            // SOCKS4's own codes: 90 granted, 91 rejected.
            metadata["reply"] = reply.map { .stringConvertible(Int(($0 == .succeeded ? SOCKS4ReplyCode.granted : .rejected).rawValue)) } ?? .string("-")
            metadata["socks4_user"] = .string(socks4UserID)
        } else {
            metadata["reply"] = reply.map { .stringConvertible(Int($0.rawValue)) } ?? .string("-")
        }
        metadata["up"] = .stringConvertible(counters.clientToTarget)
        metadata["down"] = .stringConvertible(counters.targetToClient)
        metadata["duration"] = .stringConvertible((seconds * 1000).rounded() / 1000)
        metadata["end"] = .string(end.logName)
        if let upstream = notes?.upstream { metadata["via"] = .string(upstream) }
        if let udp {
            metadata["dgrams_up"] = .stringConvertible(udp.datagramsUp)
            metadata["dgrams_down"] = .stringConvertible(udp.datagramsDown)
            metadata["destinations"] = .stringConvertible(udp.destinations)
            metadata["denied"] = .stringConvertible(udp.droppedDenied)
            metadata["dropped"] = .stringConvertible(udp.dropped)
        }
        return metadata
    }
}

/// The parts of a session's record and state that only some sessions have.
final class SessionNotes {
    /// A SOCKS4 session's user id, as the client gave it (untrusted).
    var socks4UserID: String?
    /// The upstream proxy a CONNECT went through (no credentials).
    var upstream: String?
    /// Bytes of the target that came with an upstream proxy's last answer: the client gets them
    /// right after the success reply.
    var targetLeftover: ByteBuffer?
}

extension SessionRecord {
    /// The notes, made when first written.
    mutating func notesForWriting() -> SessionNotes {
        if let notes { return notes }
        let made = SessionNotes()
        notes = made
        return made
    }
}

extension ServerMetrics {
    /// A session's end, its bytes and its datagrams.
    func sessionEnded(_ record: SessionRecord, end: SessionEnd, user: String?) {
        sessionEnded(
            command: record.command?.description ?? "-", end: end.logName, up: record.counters.clientToTarget, down: record.counters.targetToClient,
            user: user)
        if let udp = record.udp { udpDatagrams(udp) }
    }
}
