import NIOCore

/// HTTP CONNECT (RFC 9110 section 9.3.6) to an upstream: the request with Basic credentials when
/// given, then the response head, read up to `maximumHead` bytes.
public struct HTTPConnectHandshake: UpstreamHandshaking {
    let destination: SOCKSEndpoint
    let authorization: String?
    private var done = false

    public static let maximumHead = 16 * 1024

    /// Nil when a part would not be data in the request head: a destination name that is not a
    /// DNS name (the parser refuses those, so this is the second line), or a user name holding a
    /// colon or a control character (Basic credentials are `user:password`). The password goes
    /// only into base64, where no byte of it can end a line.
    public init?(destination: SOCKSEndpoint, username: String?, password: String?) {
        if case .domain(let name) = destination.host, !DestinationName.isNormalized(name) { return nil }
        if let username, username.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F || $0 == UInt8(ascii: ":") }) { return nil }
        self.destination = destination
        authorization = username.map { "Basic " + Base64.encode(Array("\($0):\(password ?? "")".utf8)) }
    }

    public func opening() -> ByteBuffer {
        let target = destination.description
        var head = "CONNECT \(target) HTTP/1.1\r\nHost: \(target)\r\n"
        if let authorization { head += "Proxy-Authorization: \(authorization)\r\n" }
        head += "\r\n"
        return ByteBuffer(string: head)
    }

    public mutating func advance(_ buffer: inout ByteBuffer) -> UpstreamStep {
        guard !done else { return .needMoreData }
        let view = buffer.readableBytesView
        // Too long is decided by where the head ends, not by how much came in one read: the same
        // answer in one read or in many gets the same step.
        let end = Self.endOfHead(view)
        guard let end, end - view.startIndex <= Self.maximumHead else {
            if end != nil || view.count >= Self.maximumHead + 4 {
                return fail(.generalFailure, "the upstream's response head is longer than \(Self.maximumHead) bytes")
            }
            return .needMoreData
        }
        let head = String(decoding: view[view.startIndex..<end], as: UTF8.self)
        buffer.moveReaderIndex(forwardBy: end + 4 - view.startIndex)
        done = true
        let statusLine = head.split(separator: "\r\n", maxSplits: 1).first ?? ""
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]) else {
            return .failed(.generalFailure, "the upstream's response is not HTTP: \(statusLine.prefix(80))")
        }
        if (200..<300).contains(status) { return .established }
        return .failed(Self.replyCode(forStatus: status), "the upstream answered \(statusLine.prefix(80))")
    }

    /// What a refused CONNECT means to a SOCKS client.
    public static func replyCode(forStatus status: Int) -> SOCKSReplyCode {
        switch status {
        case 403, 407: return .notAllowed
        case 404, 502, 503: return .hostUnreachable
        case 504: return .ttlExpired
        default: return .generalFailure
        }
    }

    private static func endOfHead(_ view: ByteBufferView) -> Int? {
        var index = view.startIndex
        while index + 3 < view.endIndex {
            if view[index] == 13, view[index + 1] == 10, view[index + 2] == 13, view[index + 3] == 10 { return index }
            index += 1
        }
        return nil
    }

    private mutating func fail(_ code: SOCKSReplyCode, _ reason: String) -> UpstreamStep {
        done = true
        return .failed(code, reason)
    }
}


/// Base64 (RFC 4648, with padding), for Basic credentials.
enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var index = 0
        while index < bytes.count {
            let count = min(3, bytes.count - index)
            var chunk = UInt32(bytes[index]) << 16
            if count > 1 { chunk |= UInt32(bytes[index + 1]) << 8 }
            if count > 2 { chunk |= UInt32(bytes[index + 2]) }
            for position in 0..<4 {
                if position <= count {
                    out.append(alphabet[Int((chunk >> UInt32(18 - 6 * position)) & 0x3F)])
                } else {
                    out.append(UInt8(ascii: "="))
                }
            }
            index += 3
        }
        return String(decoding: out, as: UTF8.self)
    }
}
