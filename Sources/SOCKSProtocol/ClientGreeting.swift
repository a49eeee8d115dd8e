import NIOCore

/// The client's first message: `VER NMETHODS METHODS`.
public struct ClientGreeting: Hashable, Sendable {
    /// The methods the client offers, in the order it sent them.
    public var methods: [AuthenticationMethod]

    public init(methods: [AuthenticationMethod]) { self.methods = methods }
}

extension ByteBuffer {
    /// Reads a greeting. Returns nil, consuming nothing, when it is not all there yet.
    public mutating func readClientGreeting() throws(SOCKSProtocolError) -> ClientGreeting? {
        var copy = self
        guard let version = copy.readInteger(as: UInt8.self) else { return nil }
        guard version == 0x05 else { throw .invalidVersion(version) }
        guard let count = copy.readInteger(as: UInt8.self),
            let methods = copy.readBytes(length: Int(count))
        else { return nil }
        self = copy
        return ClientGreeting(methods: methods.map(AuthenticationMethod.init(rawValue:)))
    }

    /// Writes a greeting (used by clients and tests).
    @discardableResult
    public mutating func writeClientGreeting(_ greeting: ClientGreeting) -> Int {
        writeInteger(UInt8(0x05)) + writeInteger(UInt8(greeting.methods.count))
            + writeBytes(greeting.methods.map(\.rawValue))
    }
}

/// The server's answer to a greeting: `VER METHOD`.
public struct MethodSelection: Hashable, Sendable {
    public var method: AuthenticationMethod

    public init(method: AuthenticationMethod) { self.method = method }
}

extension ByteBuffer {
    /// Writes a method selection message.
    @discardableResult
    public mutating func writeMethodSelection(_ selection: MethodSelection) -> Int {
        writeInteger(UInt8(0x05)) + writeInteger(selection.method.rawValue)
    }

    /// Reads a method selection message (used by clients and tests).
    public mutating func readMethodSelection() throws(SOCKSProtocolError) -> MethodSelection? {
        guard readableBytes >= 2 else { return nil }
        let version = readInteger(as: UInt8.self)!
        guard version == 0x05 else { throw .invalidVersion(version) }
        return MethodSelection(method: AuthenticationMethod(rawValue: readInteger(as: UInt8.self)!))
    }
}
