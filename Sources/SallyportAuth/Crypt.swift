import CCrypt
import SOCKSProtocol

#if canImport(Glibc)
import Glibc
#endif

/// Password hashes in crypt(3) formats, through libxcrypt's reentrant calls. Every buffer that held
/// a password or its work area is wiped before it is freed.
public enum PasswordHash {
    /// The methods `sallyport passwd` writes.
    public enum Method: String, Sendable, CaseIterable {
        case yescrypt, bcrypt, sha512

        /// The setting prefix crypt_gensalt takes.
        var prefix: String {
            switch self {
            case .yescrypt: "$y$"
            case .bcrypt: "$2b$"
            case .sha512: "$6$"
            }
        }

        /// The cost crypt_gensalt is given: 0 is libxcrypt's default (yescrypt's is sound; bcrypt's
        /// 5 and SHA-512's 5,000 rounds are cheap for today's guessing, so these are raised).
        var cost: UInt {
            switch self {
            case .yescrypt: 0
            case .bcrypt: 11
            case .sha512: 65_536
            }
        }
    }

    /// Prefixes of the methods a user file may hold: strong, salted and slow by design.
    static let acceptedPrefixes = ["$y$", "$gy$", "$2b$", "$2y$", "$2a$", "$6$", "$5$"]

    /// Why a hash is not taken, or nil when it is. A hash that starts with `!` or `*` is a locked
    /// account: valid, and no password matches it.
    public static func problem(with hash: String) -> String? {
        guard !hash.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7F }) else { return "the hash holds a blank or a control character" }
        if isLocked(hash) { return nil }
        guard acceptedPrefixes.contains(where: { hash.hasPrefix($0) }) else {
            return "the hash is not yescrypt ($y$), bcrypt ($2b$), SHA-512 ($6$) or SHA-256 ($5$); write it with `sallyport passwd`"
        }
        // libxcrypt counts SHA-256 as legacy; it is still accepted here, as the prefixes above say.
        let check = crypt_checksalt(hash)
        guard check == CRYPT_SALT_OK || check == CRYPT_SALT_METHOD_LEGACY, isWellFormed(hash) else {
            return "the hash is malformed or uses a method this libxcrypt does not offer; write it again with `sallyport passwd`"
        }
        if let cost = excessiveCost(hash) {
            return "the hash's cost (\(cost)) is more than a login may take; write it again with `sallyport passwd` (or a lower cost)"
        }
        return nil
    }

    /// The most a login's hash may cost: about a second of one core. A file holding a hash of
    /// bcrypt cost 31 or a billion SHA rounds would tie a check thread for hours per attempt.
    static let maximumBcryptCost = 14
    static let maximumSHARounds = 1_000_000
    /// yescrypt's N (log2, as the second character of its parameters, `j9T` being the default):
    /// `F` is libxcrypt's cost 11, its highest.
    static let maximumYescryptN = itoa64.firstIndex(of: UInt8(ascii: "F"))!
    static let itoa64 = Array("./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)

    /// The cost of a hash past the bounds above, as text; nil when it is within them.
    static func excessiveCost(_ hash: String) -> String? {
        let parts = hash.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count >= 4 else { return nil }
        switch parts[1] {
        case "2b", "2y", "2a":
            guard let cost = Int(parts[2]), cost > maximumBcryptCost else { return nil }
            return "bcrypt 2^\(cost), at most 2^\(maximumBcryptCost)"
        case "5", "6":
            guard parts[2].hasPrefix("rounds="), let rounds = Int(parts[2].dropFirst(7)), rounds > maximumSHARounds else { return nil }
            return "\(rounds) rounds, at most \(maximumSHARounds)"
        case "y", "gy":
            let parameters = Array(parts[2].utf8)
            guard parameters.count == 3, parameters[0] == UInt8(ascii: "j"), let n = itoa64.firstIndex(of: parameters[1]),
                let r = itoa64.firstIndex(of: parameters[2]), n <= maximumYescryptN, r <= itoa64.firstIndex(of: UInt8(ascii: "T"))!
            else { return "yescrypt parameters '\(parts[2])', at most jFT" }
            return nil
        default:
            return nil
        }
    }

    /// The shape of each accepted method: the fields between `$` and the length of the checksum.
    static func isWellFormed(_ hash: String) -> Bool {
        let parts = hash.split(separator: "$", omittingEmptySubsequences: false)
        let alphabet = { (text: Substring) in
            text.utf8.allSatisfy { byte in
                byte == UInt8(ascii: ".") || byte == UInt8(ascii: "/") || (byte >= 0x30 && byte <= 0x39) || (byte | 0x20 >= 0x61 && byte | 0x20 <= 0x7A)
            }
        }
        guard parts.count >= 4, parts[0].isEmpty, let checksum = parts.last, alphabet(checksum) else { return false }
        switch parts[1] {
        case "y", "gy": return parts.count == 5 && checksum.count == 43 && !parts[3].isEmpty
        case "2b", "2y", "2a": return parts.count == 4 && Int(parts[2]).map { (4...31).contains($0) } == true && checksum.count == 53
        case "5", "6":
            let salted = parts.count == 5 ? parts[2].hasPrefix("rounds=") : parts.count == 4
            return salted && checksum.count == (parts[1] == "5" ? 43 : 86)
        default: return false
        }
    }

    /// A locked account's hash: `!...` or `*...`.
    public static func isLocked(_ hash: String) -> Bool {
        hash.hasPrefix("!") || hash.hasPrefix("*")
    }

    /// The hash of `password` with the setting (method, cost and salt) of `setting`; nil when the
    /// password holds a NUL byte or crypt refuses. Slow by design: call off the event loops.
    static func compute(_ password: Password, setting: String) -> [UInt8]? {
        password.withUnsafeBytes { bytes -> [UInt8]? in
            guard !bytes.contains(0) else { return nil }
            let phrase = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count + 1)
            let data = UnsafeMutablePointer<crypt_data>.allocate(capacity: 1)
            defer {
                explicit_bzero(phrase, bytes.count + 1)
                phrase.deallocate()
                explicit_bzero(data, MemoryLayout<crypt_data>.size)
                data.deallocate()
            }
            memset(data, 0, MemoryLayout<crypt_data>.size)
            if let base = bytes.baseAddress { memcpy(phrase, base, bytes.count) }
            phrase[bytes.count] = 0
            guard let result = crypt_rn(phrase, setting, data, Int32(MemoryLayout<crypt_data>.size)), result[0] != CChar(UInt8(ascii: "*")) else {
                return nil
            }
            return Array(UnsafeRawBufferPointer(start: result, count: strlen(result)))
        }
    }

    /// Whether `password` matches `hash`, compared in time that does not depend on where they differ.
    public static func verify(_ password: Password, hash: String) -> Bool {
        guard !isLocked(hash), let computed = compute(password, setting: hash) else { return false }
        let stored = Array(hash.utf8)
        var difference = UInt8(computed.count == stored.count ? 0 : 1)
        for index in 0..<min(computed.count, stored.count) { difference |= computed[index] ^ stored[index] }
        return difference == 0
    }

    /// A new hash of `password` with a fresh random salt and the method's default cost.
    public static func make(_ password: Password, method: Method = .yescrypt) -> String? {
        var setting = [CChar](repeating: 0, count: Int(CRYPT_GENSALT_OUTPUT_SIZE))
        guard crypt_gensalt_rn(method.prefix, method.cost, nil, 0, &setting, Int32(setting.count)) != nil else { return nil }
        let text = String(decoding: setting.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return compute(password, setting: text).map { String(decoding: $0, as: UTF8.self) }
    }
}
