using System.Buffers;
using System.Text;
using Colo.Link;
using Microsoft.Extensions.Logging;

namespace Colo.Node;

/// <summary>What the sender of a <c>Goodbye</c> tells its peer to do.</summary>
public enum FarewellKind : byte
{
    /// <summary>The sender is going away (its VM died, it stops, or it failed): the receiver carries on alone.</summary>
    Survive = 1,

    /// <summary>
    /// The sender carries on as the only primary (it gave up on the receiver, or it took over): the receiver must stop
    /// its VM at once, so two VMs never serve the same clients after a transient stall of either host.
    /// </summary>
    Fence = 2,
}

/// <summary>
/// Payload of the link's <c>Goodbye</c> message as used by the daemons: one byte <see cref="FarewellKind"/>, then a
/// UTF-8 reason (at most 4096 bytes).
/// </summary>
public static class Farewell
{
    /// <summary>
    /// Grace between noticing a silent peer (heartbeat timeout, link closed, failed checkpoint) and acting on it:
    /// 150 ms, time for a <c>Goodbye(Fence)</c> already on the link to be read first.
    /// </summary>
    public static readonly TimeSpan PeerLostGrace = TimeSpan.FromMilliseconds(150);

    /// <summary>Encodes a goodbye.</summary>
    public static byte[] Encode(FarewellKind kind, string reason)
    {
        byte[] text = Encoding.UTF8.GetBytes(reason.Length > 1000 ? reason[..1000] : reason);
        var payload = new byte[1 + text.Length];
        payload[0] = (byte)kind;
        text.CopyTo(payload, 1);
        return payload;
    }

    /// <summary>Decodes a goodbye.</summary>
    /// <exception cref="LinkProtocolException">Empty payload, unknown kind or invalid UTF-8 (the link is closed as a protocol violation).</exception>
    public static (FarewellKind Kind, string Reason) Decode(ReadOnlySequence<byte> payload)
    {
        if (payload.IsEmpty)
            throw new LinkProtocolException("empty goodbye");
        byte[] bytes = payload.ToArray();
        var kind = (FarewellKind)bytes[0];
        if (kind is not (FarewellKind.Survive or FarewellKind.Fence))
            throw new LinkProtocolException($"goodbye of unknown kind {bytes[0]}");
        try
        {
            return (kind, new UTF8Encoding(false, true).GetString(bytes, 1, bytes.Length - 1));
        }
        catch (DecoderFallbackException e)
        {
            throw new LinkProtocolException("goodbye reason is not UTF-8", e);
        }
    }

    /// <summary>Sends a goodbye (best effort, at most 1 s) and closes the link with the reason.</summary>
    public static async Task SendAndCloseAsync(LinkConnection? link, FarewellKind kind, string reason, ulong epoch, ILogger log)
    {
        if (link == null)
            return;
        if (!link.IsClosed)
        {
            try
            {
                await link.SendAsync(MessageType.Goodbye, epoch, Encode(kind, reason)).AsTask().WaitAsync(TimeSpan.FromSeconds(1));
            }
            catch (Exception e)
            {
                log.LogDebug("goodbye not sent: {Error}", e.Message);
            }
        }
        link.Close(reason);
    }
}
