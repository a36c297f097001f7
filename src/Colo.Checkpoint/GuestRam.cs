using System.IO.MemoryMappedFiles;

namespace Colo.Checkpoint;

/// <summary>
/// A guest's RAM, mapped from the file QEMU uses as its <c>memory-backend-file</c> with
/// <c>share=on</c> (DESIGN.md mechanism 1). Reads and writes go straight to the guest's memory;
/// write only while the VM is stopped.
/// </summary>
public sealed unsafe class GuestRam : IDisposable
{
    /// <summary>Size of one guest page in bytes (x86-64 base page).</summary>
    public const int PageSize = 4096;

    private readonly MemoryMappedFile _file;
    private readonly MemoryMappedViewAccessor _view;
    private byte* _pointer;

    private GuestRam(MemoryMappedFile file, MemoryMappedViewAccessor view, long length)
    {
        _file = file;
        _view = view;
        Length = length;
        byte* p = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        _pointer = p + _view.PointerOffset;
    }

    /// <summary>Size of the mapping in bytes (a multiple of <see cref="PageSize"/>).</summary>
    public long Length { get; }

    /// <summary>Number of 4 KiB pages.</summary>
    public int PageCount => (int)(Length / PageSize);

    /// <summary>
    /// Maps <paramref name="path"/>, creating it (sparse, zero-filled) or extending it to
    /// <paramref name="lengthBytes"/> when it is shorter.
    /// </summary>
    /// <param name="path">RAM file, e.g. <c>/dev/shm/NAME.ram</c>.</param>
    /// <param name="lengthBytes">Guest RAM size in bytes; a positive multiple of 4096.</param>
    /// <exception cref="ArgumentOutOfRangeException">The length is not a positive multiple of 4096.</exception>
    /// <exception cref="IOException">The file cannot be opened or mapped.</exception>
    public static GuestRam Open(string path, long lengthBytes)
    {
        if (lengthBytes <= 0 || lengthBytes % PageSize != 0)
            throw new ArgumentOutOfRangeException(nameof(lengthBytes), lengthBytes, "guest RAM size must be a positive multiple of 4096 bytes");
        using (var fs = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.ReadWrite))
        {
            if (fs.Length < lengthBytes)
                fs.SetLength(lengthBytes);
        }
        var file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, lengthBytes, MemoryMappedFileAccess.ReadWrite);
        var view = file.CreateViewAccessor(0, lengthBytes, MemoryMappedFileAccess.ReadWrite);
        return new GuestRam(file, view, lengthBytes);
    }

    /// <summary>The bytes of page <paramref name="index"/> (4096 bytes).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The index is outside the guest's RAM.</exception>
    public Span<byte> Page(int index)
    {
        if ((uint)index >= (uint)PageCount)
            throw new ArgumentOutOfRangeException(nameof(index), index, "page index outside guest RAM");
        ObjectDisposedException.ThrowIf(_pointer == null, this);
        return new Span<byte>(_pointer + (long)index * PageSize, PageSize);
    }

    /// <summary>A span over <paramref name="count"/> consecutive pages starting at <paramref name="first"/>.</summary>
    public Span<byte> Pages(int first, int count)
    {
        if (first < 0 || count < 0 || (long)first + count > PageCount)
            throw new ArgumentOutOfRangeException(nameof(first), "page range outside guest RAM");
        ObjectDisposedException.ThrowIf(_pointer == null, this);
        return new Span<byte>(_pointer + (long)first * PageSize, count * PageSize);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_pointer == null)
            return;
        _pointer = null;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _file.Dispose();
    }
}
