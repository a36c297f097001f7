using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace Colo.Link;

/// <summary>
/// Wire format of the replication link. Each message is a 16-byte big-endian header — magic u16 =
/// <see cref="Magic"/>, version u8 = <see cref="Version"/>, type u8 (<see cref="MessageType"/>), payload length
/// u32, epoch u64 — followed by the payload. Parsers follow the Try pattern: <c>false</c> means "need more
/// bytes" (nothing consumed), a <see cref="LinkProtocolException"/> means malformed input.
/// </summary>
public static class LinkFraming
{
    /// <summary>Header size in bytes (16).</summary>
    public const int HeaderSize = 16;

    /// <summary>Magic number in the first two header bytes (0xC01A).</summary>
    public const ushort Magic = 0xC01A;

    /// <summary>The protocol version written and accepted by this implementation (1).</summary>
    public const byte Version = 1;

    /// <summary>Largest accepted payload in bytes: 16 MiB (16,777,216). Larger lengths are protocol violations.</summary>
    public const int MaxPayloadLength = 16 * 1024 * 1024;

    private const byte MinType = (byte)MessageType.Hello;
    private const byte MaxType = (byte)MessageType.DiskWrites;

    /// <summary>Whether <paramref name="type"/> is a message type of this protocol version.</summary>
    /// <param name="type">The value to check.</param>
    /// <returns><c>true</c> for the defined <see cref="MessageType"/> values.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsKnownType(MessageType type) => (uint)((byte)type - MinType) <= MaxType - MinType;

    /// <summary>
    /// Tries to take one complete message off the front of <paramref name="buffer"/>. The header is validated as
    /// soon as its 16 bytes are present, so a bad or oversized header throws without waiting for the payload.
    /// </summary>
    /// <param name="buffer">Received bytes; on success advanced past the message, otherwise untouched.</param>
    /// <param name="header">The decoded header (default when <c>false</c> is returned).</param>
    /// <param name="payload">A slice of <paramref name="buffer"/> holding the payload (no copy).</param>
    /// <returns><c>true</c> if a whole message was read; <c>false</c> if more bytes are needed.</returns>
    /// <exception cref="LinkProtocolException">Bad magic, unknown version, unknown type, or payload length above <see cref="MaxPayloadLength"/>.</exception>
    public static bool TryReadMessage(ref ReadOnlySequence<byte> buffer, out MessageHeader header, out ReadOnlySequence<byte> payload)
    {
        payload = default;
        if (buffer.Length < HeaderSize)
        {
            header = default;
            return false;
        }

        ReadOnlySpan<byte> first = buffer.FirstSpan;
        if (first.Length >= HeaderSize)
        {
            header = ReadHeader(first);
        }
        else
        {
            Span<byte> copy = stackalloc byte[HeaderSize];
            buffer.Slice(0, HeaderSize).CopyTo(copy);
            header = ReadHeader(copy);
        }

        if (buffer.Length - HeaderSize < header.PayloadLength)
        {
            header = default;
            return false;
        }

        payload = buffer.Slice(HeaderSize, header.PayloadLength);
        buffer = buffer.Slice(payload.End);
        return true;
    }

    /// <summary>Decodes and validates a header.</summary>
    /// <param name="source">At least <see cref="HeaderSize"/> bytes; only the first 16 are read.</param>
    /// <returns>The decoded header.</returns>
    /// <exception cref="ArgumentException"><paramref name="source"/> is shorter than <see cref="HeaderSize"/>.</exception>
    /// <exception cref="LinkProtocolException">Bad magic, unknown version, unknown type, or oversized payload length.</exception>
    public static MessageHeader ReadHeader(ReadOnlySpan<byte> source)
    {
        if (source.Length < HeaderSize)
        {
            ThrowShortSpan(nameof(source));
        }

        ushort magic = BinaryPrimitives.ReadUInt16BigEndian(source);
        if (magic != Magic)
        {
            ThrowBadMagic(magic);
        }

        byte version = source[2];
        if (version != Version)
        {
            ThrowBadVersion(version);
        }

        var type = (MessageType)source[3];
        if (!IsKnownType(type))
        {
            ThrowBadType((byte)type);
        }

        uint length = BinaryPrimitives.ReadUInt32BigEndian(source.Slice(4));
        if (length > MaxPayloadLength)
        {
            ThrowOversized(length);
        }

        ulong epoch = BinaryPrimitives.ReadUInt64BigEndian(source.Slice(8));
        return new MessageHeader(type, epoch, (int)length);
    }

    /// <summary>Writes a 16-byte header into <paramref name="destination"/>.</summary>
    /// <param name="destination">At least <see cref="HeaderSize"/> bytes; the first 16 are overwritten.</param>
    /// <param name="type">A defined <see cref="MessageType"/>.</param>
    /// <param name="epoch">The sender's current epoch.</param>
    /// <param name="payloadLength">Payload length in bytes, 0 to <see cref="MaxPayloadLength"/>.</param>
    /// <exception cref="ArgumentException"><paramref name="destination"/> is shorter than <see cref="HeaderSize"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="type"/> is not defined, or <paramref name="payloadLength"/> is negative or above <see cref="MaxPayloadLength"/>.</exception>
    public static void WriteHeader(Span<byte> destination, MessageType type, ulong epoch, int payloadLength)
    {
        if (destination.Length < HeaderSize)
        {
            ThrowShortSpan(nameof(destination));
        }

        ValidateOutgoing(type, payloadLength);
        BinaryPrimitives.WriteUInt16BigEndian(destination, Magic);
        destination[2] = Version;
        destination[3] = (byte)type;
        BinaryPrimitives.WriteUInt32BigEndian(destination.Slice(4), (uint)payloadLength);
        BinaryPrimitives.WriteUInt64BigEndian(destination.Slice(8), epoch);
    }

    /// <summary>Argument checks shared by <see cref="WriteHeader"/> and the connection's send path.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void ValidateOutgoing(MessageType type, long payloadLength)
    {
        if (!IsKnownType(type))
        {
            ThrowArgumentOutOfRange(nameof(type), "Unknown message type " + (byte)type + ".");
        }

        if ((ulong)payloadLength > MaxPayloadLength)
        {
            ThrowArgumentOutOfRange(nameof(payloadLength), "Payload length " + payloadLength + " is outside 0.." + MaxPayloadLength + ".");
        }
    }

    [DoesNotReturn]
    private static void ThrowBadMagic(ushort magic) => LinkProtocolException.Throw($"bad magic 0x{magic:X4} (expected 0x{Magic:X4})");

    [DoesNotReturn]
    private static void ThrowBadVersion(byte version) => LinkProtocolException.Throw($"unknown version {version} (supported: {Version})");

    [DoesNotReturn]
    private static void ThrowBadType(byte type) => LinkProtocolException.Throw($"unknown message type {type}");

    [DoesNotReturn]
    private static void ThrowOversized(uint length) => LinkProtocolException.Throw($"payload length {length} exceeds maximum {MaxPayloadLength}");

    [DoesNotReturn]
    private static void ThrowShortSpan(string name) => throw new ArgumentException($"Need at least {HeaderSize} bytes.", name);

    [DoesNotReturn]
    private static void ThrowArgumentOutOfRange(string name, string message) => throw new ArgumentOutOfRangeException(name, message);
}
