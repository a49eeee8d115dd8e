import NIOCore

/// One live session as the admin listener shows it.
public struct SessionSnapshot: Sendable, Hashable, Codable {
    public var id: String
    public var listener: String
    public var client: String
    public var user: String?
    public var command: String?
    public var destination: String?
    public var bytesUp: UInt64
    public var bytesDown: UInt64
    public var ageSeconds: Double

    enum CodingKeys: String, CodingKey {
        case id, listener, client, user, command, destination
        case bytesUp = "bytes_up"
        case bytesDown = "bytes_down"
        case ageSeconds = "age_seconds"
    }
}

extension SessionRegistry {
    /// Every live session, each read on its own event loop; oldest first.
    func snapshots(on eventLoop: any EventLoop) -> EventLoopFuture<[SessionSnapshot]> {
        let sessions = all()
        let reads = sessions.map { session in session.eventLoop.submit { session.value.snapshot } }
        return EventLoopFuture.whenAllComplete(reads, on: eventLoop).map { results in
            results.compactMap { try? $0.get() }.sorted { $0.ageSeconds > $1.ageSeconds }
        }
    }

    /// Closes the session with this id (hexadecimal, as the logs write it); false when there is none.
    func closeByAdmin(id: String) -> Bool {
        guard let number = UInt64(id, radix: 16), let session = find(number) else { return false }
        session.eventLoop.execute { session.value.closeByAdmin() }
        return true
    }
}
