using System.Buffers;

namespace Colo.Link;

/// <summary>
/// Consumes one received message. <paramref name="payload"/> refers to the connection's receive buffers and is
/// valid only until the returned task completes; copy what must outlive the call. Throwing
/// <see cref="LinkProtocolException"/> closes the link as a protocol violation; any other exception closes the
/// link and ends <see cref="LinkConnection.RunReceiveLoopAsync"/> with that exception.
/// </summary>
/// <param name="type">The message type.</param>
/// <param name="epoch">The epoch carried in the header.</param>
/// <param name="payload">The payload bytes (possibly several segments, possibly empty).</param>
public delegate ValueTask LinkMessageHandler(MessageType type, ulong epoch, ReadOnlySequence<byte> payload);
