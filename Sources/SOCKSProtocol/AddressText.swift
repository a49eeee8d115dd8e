/// Addresses as text, in one place: `192.0.2.1`, `192.0.2.1:80`, `[2001:db8::1]:80`, `name:80`.
/// IPv4 text is built in a small stack buffer: the text of an address and port of up to fifteen
/// bytes is a Swift small string, and the access log writes three of them per session.
public enum AddressText {
    /// `a.b.c.d`, or `a.b.c.d:port`.
    public static func ipv4(_ value: UInt32, port: Int? = nil) -> String {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 21) { buffer in
            var count = 0
            func digits(_ number: Int) {
                var divisor = 1
                while divisor * 10 <= number { divisor *= 10 }
                while divisor > 0 {
                    buffer[count] = UInt8(truncatingIfNeeded: 48 + (number / divisor) % 10)
                    count += 1
                    divisor /= 10
                }
            }
            for shift in [24, 16, 8, 0] as [UInt32] {
                if shift != 24 {
                    buffer[count] = UInt8(ascii: ".")
                    count += 1
                }
                digits(Int((value >> shift) & 0xFF))
            }
            if let port, (0...65535).contains(port) {
                buffer[count] = UInt8(ascii: ":")
                count += 1
                digits(port)
            }
            return String(decoding: UnsafeBufferPointer(rebasing: buffer[0..<count]), as: UTF8.self)
        }
    }

    /// `host:port`, an IPv6 host in brackets.
    public static func endpoint(_ host: SOCKSHost, port: Int) -> String {
        switch host {
        case .ipv4(let address): return ipv4(address.value, port: port)
        case .ipv6(let address): return "[\(address)]:\(port)"
        case .domain(let name): return "\(name):\(port)"
        }
    }
}
