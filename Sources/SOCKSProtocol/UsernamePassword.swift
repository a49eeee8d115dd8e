import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// A password, kept out of every description so that it cannot reach a log by accident, and held
/// in memory of its own that is overwritten when the last copy of it goes (a value copy shares it).
public struct Password: Hashable, Sendable {
    private let storage: SecretBytes

    /// The bytes exactly as the client sent them.
    public init(bytes: some Collection<UInt8>) { storage = SecretBytes(bytes) }
    public init(_ string: String) { storage = SecretBytes(string.utf8) }

    public var count: Int { storage.buffer.count }

    /// The bytes, for as long as `body` runs. Copies made from them are the caller's to wipe.
    public func withUnsafeBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        try body(UnsafeRawBufferPointer(storage.buffer))
    }

    public static func == (lhs: Password, rhs: Password) -> Bool {
        lhs.storage.buffer.elementsEqual(rhs.storage.buffer)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(bytes: UnsafeRawBufferPointer(storage.buffer))
    }
}

/// Bytes in an allocation of their own, zeroed (`explicit_bzero`, which the compiler may not drop)
/// before it is freed.
final class SecretBytes: Sendable {
    // Sendable: written once, in init; read only after.
    nonisolated(unsafe) let buffer: UnsafeMutableBufferPointer<UInt8>

    init(_ bytes: some Collection<UInt8>) {
        buffer = .allocate(capacity: bytes.count)
        _ = buffer.initialize(fromContentsOf: bytes)
    }

    deinit {
        if let base = buffer.baseAddress { explicit_bzero(base, buffer.count) }
        buffer.deallocate()
    }
}

extension Password: CustomStringConvertible, CustomDebugStringConvertible {
    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
}

/// The RFC 1929 request: `VER ULEN UNAME PLEN PASSWD`.
public struct UsernamePasswordRequest: Hashable, Sendable {
    public var username: String
    public var password: Password

    public init(username: String, password: Password) {
        self.username = username
        self.password = password
    }
}

extension UsernamePasswordRequest: CustomStringConvertible {
    public var description: String { "UsernamePasswordRequest(username: \(username), password: <redacted>)" }
}

/// The RFC 1929 reply: `VER STATUS`; status 0 is success, anything else failure.
public struct UsernamePasswordReply: Hashable, Sendable {
    public var status: UInt8

    public init(status: UInt8) { self.status = status }

    public static let success = UsernamePasswordReply(status: 0x00)
    public static let failure = UsernamePasswordReply(status: 0x01)
}

extension ByteBuffer {
    /// Reads an RFC 1929 request. Returns nil, consuming nothing, when it is not all there yet.
    /// A zero length, or a NUL byte in either field, is an error: neither can be checked honestly.
    public mutating func readUsernamePasswordRequest() throws(SOCKSProtocolError) -> UsernamePasswordRequest? {
        var copy = self
        guard let version = copy.readInteger(as: UInt8.self) else { return nil }
        guard version == 0x01 else { throw .invalidAuthenticationVersion(version) }
        guard let usernameLength = copy.readInteger(as: UInt8.self) else { return nil }
        guard usernameLength > 0 else { throw .invalidCredentials }
        guard let username = copy.readBytes(length: Int(usernameLength)),
            let passwordLength = copy.readInteger(as: UInt8.self)
        else { return nil }
        guard passwordLength > 0 else { throw .invalidCredentials }
        // A slice of the buffer, not a copy: the password's one copy is the Password's own.
        guard let password = copy.readSlice(length: Int(passwordLength)) else { return nil }
        guard !username.contains(0), !password.readableBytesView.contains(0) else { throw .invalidCredentials }
        self = copy
        return UsernamePasswordRequest(
            username: String(decoding: username, as: UTF8.self), password: Password(bytes: password.readableBytesView))
    }

    /// Writes an RFC 1929 request (used by clients and tests).
    @discardableResult
    public mutating func writeUsernamePasswordRequest(_ request: UsernamePasswordRequest) -> Int {
        let username = Array(request.username.utf8)
        return writeInteger(UInt8(0x01)) + writeInteger(UInt8(username.count)) + writeBytes(username)
            + writeInteger(UInt8(request.password.count)) + request.password.withUnsafeBytes { writeBytes($0) }
    }

    /// Writes an RFC 1929 reply.
    @discardableResult
    public mutating func writeUsernamePasswordReply(_ reply: UsernamePasswordReply) -> Int {
        writeInteger(UInt8(0x01)) + writeInteger(reply.status)
    }
}
