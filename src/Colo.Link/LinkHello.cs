using System.Buffers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Colo.Link.Internal;

namespace Colo.Link;

/// <summary>
/// Payload of <see cref="MessageType.Hello"/>: who the sender is and what it protects, so that both daemons can
/// refuse a peer configured for a different VM. Encoded as compact UTF-8 JSON with camelCase property names.
/// </summary>
/// <param name="Role">"primary" or "secondary" (not interpreted here).</param>
/// <param name="VmName">Name of the protected VM.</param>
/// <param name="MemoryBytes">Guest RAM size in bytes.</param>
/// <param name="ConfigHash">Hash of the VM configuration that must match on both sides (format chosen by the caller).</param>
public sealed record LinkHello(string Role, string VmName, long MemoryBytes, string ConfigHash)
{
    /// <summary>Largest accepted encoded hello, in bytes (64 KiB).</summary>
    public const int MaxEncodedLength = 64 * 1024;

    /// <summary>Encodes a hello as UTF-8 JSON.</summary>
    /// <param name="hello">The hello to encode.</param>
    /// <returns>A new array holding the payload.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="hello"/> is null.</exception>
    public static byte[] Encode(LinkHello hello)
    {
        ArgumentNullException.ThrowIfNull(hello);
        return JsonSerializer.SerializeToUtf8Bytes(hello, LinkJsonContext.Default.LinkHello);
    }

    /// <summary>Decodes a hello payload.</summary>
    /// <param name="payload">The payload of a <see cref="MessageType.Hello"/> message.</param>
    /// <returns>The decoded hello.</returns>
    /// <exception cref="LinkProtocolException">The payload is larger than <see cref="MaxEncodedLength"/>, is not valid JSON, or lacks a property.</exception>
    public static LinkHello Decode(ReadOnlySequence<byte> payload)
    {
        if (payload.Length > MaxEncodedLength)
        {
            LinkProtocolException.Throw($"hello of {payload.Length} bytes exceeds {MaxEncodedLength}");
        }

        LinkHello? hello = null;
        try
        {
            var reader = new Utf8JsonReader(payload);
            hello = JsonSerializer.Deserialize(ref reader, LinkJsonContext.Default.LinkHello);
        }
        catch (JsonException ex)
        {
            LinkProtocolException.Throw("undecodable hello: " + ex.Message, ex);
        }

        if (hello is null || hello.Role is null || hello.VmName is null || hello.ConfigHash is null)
        {
            LinkProtocolException.Throw("hello lacks required properties");
        }

        return hello;
    }

    /// <summary>Decodes a hello payload held in one span.</summary>
    /// <param name="payload">The payload bytes.</param>
    /// <returns>The decoded hello.</returns>
    /// <exception cref="LinkProtocolException">As for <see cref="Decode(ReadOnlySequence{byte})"/>.</exception>
    public static LinkHello Decode(ReadOnlyMemory<byte> payload) => Decode(new ReadOnlySequence<byte>(payload));
}

/// <summary>Encoding of the <see cref="MessageType.Goodbye"/> payload: the reason as UTF-8 text.</summary>
public static class LinkGoodbye
{
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>Largest accepted reason, in encoded bytes (4 KiB); longer reasons are truncated by <see cref="Encode"/>.</summary>
    public const int MaxReasonBytes = 4096;

    /// <summary>Encodes a goodbye reason.</summary>
    /// <param name="reason">Human-readable reason; truncated to at most <see cref="MaxReasonBytes"/> bytes.</param>
    /// <returns>A new array holding the payload.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="reason"/> is null.</exception>
    public static byte[] Encode(string reason)
    {
        ArgumentNullException.ThrowIfNull(reason);
        byte[] bytes = StrictUtf8.GetBytes(reason);
        if (bytes.Length <= MaxReasonBytes)
        {
            return bytes;
        }

        // Cut on a character boundary: back off over UTF-8 continuation bytes.
        int cut = MaxReasonBytes;
        while (cut > 0 && (bytes[cut] & 0xC0) == 0x80)
        {
            cut--;
        }

        return bytes.AsSpan(0, cut).ToArray();
    }

    /// <summary>Decodes a goodbye payload.</summary>
    /// <param name="payload">The payload of a <see cref="MessageType.Goodbye"/> message.</param>
    /// <returns>The reason text.</returns>
    /// <exception cref="LinkProtocolException">The payload is longer than <see cref="MaxReasonBytes"/> or not valid UTF-8.</exception>
    public static string Decode(ReadOnlySequence<byte> payload)
    {
        if (payload.Length > MaxReasonBytes)
        {
            LinkProtocolException.Throw($"goodbye reason of {payload.Length} bytes exceeds {MaxReasonBytes}");
        }

        try
        {
            return StrictUtf8.GetString(payload);
        }
        catch (ArgumentException ex)
        {
            throw new LinkProtocolException("goodbye reason is not valid UTF-8", ex);
        }
    }
}
